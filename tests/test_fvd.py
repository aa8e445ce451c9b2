"""Frechet distance and streaming feature statistics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from larp_video.evaluation.fvd import FeatureStatistics, RankDeficientCovarianceWarning, frechet_distance, fvd


def _random_gaussian(rng: np.random.Generator, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A mean and a well-conditioned covariance (eigenvalues between 0.1 and about 5)."""
    factor = rng.normal(size=(dim, dim))
    return rng.normal(size=dim), factor @ factor.T / dim + 0.1 * np.eye(dim)


def _scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2.0 * root))


def _features(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    return rng.normal(size=(count, dim)) * np.linspace(0.5, 3.0, dim) + 4.0


def test_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    for dim in (2, 16, 64):
        mu1, sigma1 = _random_gaussian(rng, dim)
        mu2, sigma2 = _random_gaussian(rng, dim)

        ours = frechet_distance(mu1, sigma1, mu2, sigma2)

        # Both computations are float64; 1e-8 relative allows for the different algorithms.
        assert ours == pytest.approx(_scipy_frechet(mu1, sigma1, mu2, sigma2), rel=1e-8)


def test_same_gaussian_zero():
    mu, sigma = _random_gaussian(np.random.default_rng(1), 32)

    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_mean_shift_only():
    mu, sigma = _random_gaussian(np.random.default_rng(2), 8)

    assert frechet_distance(mu, sigma, mu + 0.5, sigma) == pytest.approx(8 * 0.25, rel=1e-9)


def test_singular_covariances():
    rng = np.random.default_rng(3)
    low_rank = rng.normal(size=(16, 3))
    sigma = low_rank @ low_rank.T  # rank 3

    distance = frechet_distance(np.zeros(16), sigma, np.zeros(16), sigma)

    assert distance == pytest.approx(0.0, abs=1e-8)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(D, D\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fvd_same_features_zero():
    features = _features(np.random.default_rng(4), 200, 16)
    real = FeatureStatistics().update(features)
    fake = FeatureStatistics().update(features)

    assert fvd(real, fake) == pytest.approx(0.0, abs=1e-8)


def test_streaming_equals_batch():
    features = _features(np.random.default_rng(5), 300, 12)
    streamed = FeatureStatistics(12)
    for start in range(0, 300, 7):
        streamed.update(torch.from_numpy(features[start : start + 7]))

    np.testing.assert_allclose(streamed.mean, features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(streamed.covariance, np.cov(features, rowvar=False, bias=True), rtol=1e-9, atol=1e-12)
    assert streamed.count == 300


def test_merge_equals_concatenation():
    rng = np.random.default_rng(6)
    first, second = _features(rng, 50, 10), _features(rng, 70, 10)

    merged = FeatureStatistics().update(first).merge(FeatureStatistics().update(second))
    together = FeatureStatistics().update(np.concatenate([first, second]))

    assert merged.count == together.count
    np.testing.assert_allclose(merged.mean, together.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.covariance, together.covariance, rtol=1e-10, atol=1e-12)


def test_merge_with_empty():
    features = _features(np.random.default_rng(7), 20, 4)
    statistics = FeatureStatistics().update(features)

    merged = FeatureStatistics().merge(statistics)

    np.testing.assert_array_equal(merged.outer_sum, statistics.outer_sum)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_load_round_trip(tmp_path, suffix):
    statistics = FeatureStatistics(metadata={"extractor": "i3d-carrier", "protocol": "rfvd-ucf101"})
    statistics.update(_features(np.random.default_rng(8), 40, 6))
    path = tmp_path / f"stats{suffix}"

    statistics.save(path)
    loaded = FeatureStatistics.load(path)

    assert loaded.count == 40
    assert loaded.metadata == {"extractor": "i3d-carrier", "protocol": "rfvd-ucf101"}
    np.testing.assert_array_equal(loaded.feature_sum, statistics.feature_sum)
    np.testing.assert_array_equal(loaded.outer_sum, statistics.outer_sum)


def test_save_rejects_unknown_suffix(tmp_path):
    statistics = FeatureStatistics().update(np.zeros((2, 3)))

    with pytest.raises(ValueError, match=".npz or .safetensors"):
        statistics.save(tmp_path / "stats.pkl")


def test_fewer_than_two_videos_raises():
    real = FeatureStatistics().update(np.ones((1, 4)))
    fake = FeatureStatistics().update(np.ones((5, 4)))

    with pytest.raises(ValueError, match="real set has 1"):
        fvd(real, fake)


def test_fewer_videos_than_dims_warns_once():
    rng = np.random.default_rng(9)
    real = FeatureStatistics().update(rng.normal(size=(10, 400)))
    fake = FeatureStatistics().update(rng.normal(size=(12, 400)))

    with pytest.warns(RankDeficientCovarianceWarning, match="real 10, fake 12") as caught:
        fvd(real, fake)

    assert len(caught) == 1


def test_enough_videos_no_warning():
    rng = np.random.default_rng(10)
    real = FeatureStatistics().update(rng.normal(size=(20, 8)))
    fake = FeatureStatistics().update(rng.normal(size=(20, 8)))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fvd(real, fake)


def test_update_rejects_other_dimension():
    statistics = FeatureStatistics(4)

    with pytest.raises(ValueError, match="dimension 5"):
        statistics.update(np.zeros((2, 5)))


def test_update_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        FeatureStatistics().update(np.array([[0.0, np.nan]]))


def test_all_reduce_without_process_group():
    statistics = FeatureStatistics().update(np.eye(3))

    assert statistics.all_reduce().count == 3


def test_all_reduce_single_rank_gloo(tmp_path):
    features = _features(np.random.default_rng(11), 9, 5)
    statistics = FeatureStatistics().update(features)
    expected_sum = statistics.feature_sum.copy()
    torch.distributed.init_process_group("gloo", init_method=(tmp_path / "rendezvous").as_uri(), rank=0, world_size=1)
    try:
        statistics.all_reduce()
    finally:
        torch.distributed.destroy_process_group()

    assert statistics.count == 9
    np.testing.assert_array_equal(statistics.feature_sum, expected_sum)
