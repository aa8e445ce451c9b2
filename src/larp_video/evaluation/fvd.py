"""Streaming feature statistics and the Frechet distance between two Gaussians (FVD).

``FeatureStatistics`` keeps float64 running sums (count, sum of features, sum of outer
products), so any number of videos can be added batch by batch, merged across workers and saved.
Its covariance is the biased one (divided by N), as in StyleGAN-V and TF-GAN.

``frechet_distance`` computes ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)
with symmetric eigendecompositions in float64. The matrix S1^1/2 S2 S1^1/2 is symmetric positive
semi-definite, so the trace of its square root is the sum of the square roots of its eigenvalues
(tiny negative eigenvalues from rounding are clamped to 0), with no complex numbers involved.

Dimension legend: N videos, D feature dimension (400 for I3D logits).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1


class RankDeficientCovarianceWarning(UserWarning):
    """A covariance was estimated from fewer videos than feature dimensions."""


class FeatureStatistics:
    """Running float64 sums of (N, D) feature batches: count, sum and sum of outer products."""

    def __init__(self, feature_dim: int | None = None, metadata: dict[str, str] | None = None):
        self.count = 0
        self.feature_sum: np.ndarray | None = None  # (D,)
        self.outer_sum: np.ndarray | None = None  # (D, D)
        self.metadata: dict[str, str] = dict(metadata or {})
        if feature_dim is not None:
            self._allocate(feature_dim)

    @property
    def feature_dim(self) -> int | None:
        return None if self.feature_sum is None else self.feature_sum.shape[0]

    def _allocate(self, feature_dim: int) -> None:
        self.feature_sum = np.zeros(feature_dim, dtype=np.float64)
        self.outer_sum = np.zeros((feature_dim, feature_dim), dtype=np.float64)

    def update(self, features: torch.Tensor | np.ndarray) -> FeatureStatistics:
        """Add an (N, D) batch of features; returns self."""
        if isinstance(features, torch.Tensor):
            features = features.detach().to("cpu", torch.float64).numpy()
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {features.shape}")
        if self.feature_dim is None:
            self._allocate(features.shape[1])
        elif features.shape[1] != self.feature_dim:
            raise ValueError(f"features have dimension {features.shape[1]}, these statistics have {self.feature_dim}")
        if not np.isfinite(features).all():
            raise ValueError("features contain NaN or infinite values")

        self.count += features.shape[0]
        self.feature_sum += features.sum(axis=0)
        self.outer_sum += features.T @ features  # (D, N) @ (N, D)
        return self

    @property
    def mean(self) -> np.ndarray:
        """The (D,) float64 mean; needs at least one video."""
        if self.count < 1:
            raise ValueError("the mean needs at least 1 video, these statistics have 0")
        return self.feature_sum / self.count

    @property
    def covariance(self) -> np.ndarray:
        """The (D, D) float64 biased covariance (divided by N); needs at least 2 videos."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 videos, these statistics have {self.count}")
        mean = self.mean
        covariance = self.outer_sum / self.count - np.outer(mean, mean)
        return (covariance + covariance.T) / 2.0

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """Return new statistics equal to those of both feature sets together; metadata comes from self."""
        if self.feature_dim is not None and other.feature_dim is not None and self.feature_dim != other.feature_dim:
            raise ValueError(f"cannot merge statistics of dimension {self.feature_dim} and {other.feature_dim}")
        merged = FeatureStatistics(self.feature_dim or other.feature_dim, self.metadata)
        for part in (self, other):
            if part.feature_sum is not None:
                merged.count += part.count
                merged.feature_sum += part.feature_sum
                merged.outer_sum += part.outer_sum
        return merged

    def all_reduce(self) -> FeatureStatistics:
        """Sum the statistics of all torch.distributed ranks in place; does nothing without a process group.

        Every rank must have the same feature dimension. The sums travel as float64 tensors on
        the current CUDA device with the NCCL backend and on the CPU otherwise.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self
        if self.feature_dim is None:
            raise ValueError("all_reduce needs the feature dimension; create the statistics with feature_dim")

        backend = torch.distributed.get_backend()
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        packed = torch.from_numpy(np.concatenate([[float(self.count)], self.feature_sum, self.outer_sum.ravel()]))
        packed = packed.to(device)
        torch.distributed.all_reduce(packed)
        packed = packed.cpu().numpy()

        dim = self.feature_dim
        self.count = int(round(packed[0]))
        self.feature_sum = packed[1 : dim + 1].copy()
        self.outer_sum = packed[dim + 1 :].reshape(dim, dim).copy()
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics to ``path``: ``.npz``, or ``.safetensors`` with the metadata in its header."""
        path = Path(path)
        if self.feature_dim is None:
            raise ValueError("cannot save statistics that have not seen any features")
        header = {"larp_video_format": str(FORMAT_VERSION), "count": str(self.count), **self.metadata}
        if path.suffix == ".npz":
            np.savez(
                path,
                count=np.array(self.count, dtype=np.int64),
                feature_sum=self.feature_sum,
                outer_sum=self.outer_sum,
                metadata=np.array(json.dumps(header)),
            )
        elif path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({"feature_sum": self.feature_sum, "outer_sum": self.outer_sum}, path, metadata=header)
        else:
            raise ValueError(f"statistics files end in .npz or .safetensors, got {path.name}")

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStatistics:
        """Read statistics written by ``save``."""
        path = Path(path)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                header = json.loads(str(archive["metadata"]))
                count = int(archive["count"])
                feature_sum, outer_sum = archive["feature_sum"], archive["outer_sum"]
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(path, framework="numpy") as handle:
                header = dict(handle.metadata() or {})
                feature_sum, outer_sum = handle.get_tensor("feature_sum"), handle.get_tensor("outer_sum")
            count = int(header["count"])
        else:
            raise ValueError(f"statistics files end in .npz or .safetensors, got {path.name}")

        if header.get("larp_video_format") != str(FORMAT_VERSION):
            raise ValueError(f"{path} is not a larp-video statistics file of format {FORMAT_VERSION}")
        metadata = {key: value for key, value in header.items() if key not in ("larp_video_format", "count")}
        statistics = cls(feature_sum.shape[0], metadata)
        statistics.count = count
        statistics.feature_sum = np.asarray(feature_sum, dtype=np.float64)
        statistics.outer_sum = np.asarray(outer_sum, dtype=np.float64)
        return statistics


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; negative eigenvalues count as 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * roots) @ eigenvectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Return the Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    dim = mu1.shape[0]
    if mu1.shape != (dim,) or mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"expected means of shape (D,) and covariances of shape (D, D); got {mu1.shape}, {sigma1.shape}, "
            f"{mu2.shape}, {sigma2.shape}"
        )

    root1 = _symmetric_sqrt((sigma1 + sigma1.T) / 2.0)
    product = root1 @ sigma2 @ root1  # symmetric PSD: S1^1/2 S2 S1^1/2
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2.0)
    trace_root = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()

    difference = mu1 - mu2
    distance = difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root
    # Rounding can push the distance of two nearly equal Gaussians a little below 0.
    return float(max(distance, 0.0))


def fvd(real: FeatureStatistics, fake: FeatureStatistics) -> float:
    """Return the Frechet distance between the feature statistics of two video sets.

    Raises ValueError when a set has fewer than 2 videos. Warns with
    ``RankDeficientCovarianceWarning`` when a set has fewer videos than feature dimensions,
    because its covariance is then singular and the distance is biased.
    """
    for name, statistics in (("real", real), ("fake", fake)):
        if statistics.count < 2:
            raise ValueError(f"FVD needs at least 2 videos per set, the {name} set has {statistics.count}")
    if real.feature_dim != fake.feature_dim:
        raise ValueError(f"the real features have dimension {real.feature_dim}, the fake ones {fake.feature_dim}")

    small = [f"{name} {s.count}" for name, s in (("real", real), ("fake", fake)) if s.count < s.feature_dim]
    if small:
        warnings.warn(
            f"fewer videos than feature dimensions ({real.feature_dim}) in: {', '.join(small)}; the covariance is "
            "rank deficient and the FVD is biased. Use thousands of videos for reportable numbers",
            RankDeficientCovarianceWarning,
            stacklevel=2,
        )
    return frechet_distance(real.mean, real.covariance, fake.mean, fake.covariance)
