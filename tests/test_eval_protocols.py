"""Clip selection, sharding and the arithmetic of the evaluation protocols (with a stub I3D)."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch

from eval_helpers import StubExtractor, StubLPIPS, distributed_worker, write_manifest, write_samples
from larp_video.data.datasets import VideoClipDataset
from larp_video.data.video_errors import TooFewFramesError, VideoReadError
from larp_video.evaluation.chunks import (
    NotEnoughChunksError,
    PlannedChunk,
    ProtocolError,
    clip_start,
    draw_chunks,
    enumerate_chunks,
    plan_chunks,
    read_manifest_entries,
    read_plan,
    select_videos,
    write_plan,
)
from larp_video.evaluation.clip_reading import ChunkClips, ReconstructionClips, SampleClips, list_sample_files
from larp_video.evaluation.distributed import shard
from larp_video.evaluation.fvd import FeatureStatistics, fvd
from larp_video.evaluation.protocols import ChunkProtocolConfig, check_clip_length, run_chunk_protocol
from larp_video.evaluation.reconstruction_protocol import ReconstructionConfig, reconstruct_clips, run_reconstruction
from larp_video.models.tokenizer import LARPTokenizer

FRAMES = 10  # chunk length in these tests: above I3D's minimum of 9, short enough to stay fast
FRAME_COUNTS = [25, 12, 8, 31, 20]  # chunks of 10 frames: 2, 1, 0, 3, 2


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("videos"), FRAME_COUNTS)


@pytest.fixture(scope="module")
def lpips_model():
    from larp_video.evaluation.lpips import load_lpips

    return load_lpips()


def _generation_config(manifest, tmp_path, samples, **values):
    return ChunkProtocolConfig.for_generation(
        manifest=str(manifest), output_dir=str(tmp_path / "out"), samples=str(samples), num_chunks=4,
        frames=FRAMES, clip_size=32, batch_size=3, progress=False, **values,
    )


def _reconstruction_config(manifest, tmp_path, **values):
    return ReconstructionConfig(
        manifest=str(manifest), output_dir=str(tmp_path / "rec"), frames=FRAMES, batch_size=2, progress=False, **values
    )


# ---------------------------------------------------------------------------------------------
# Chunk enumeration and draws
# ---------------------------------------------------------------------------------------------


def test_enumerate_chunks_video_by_video():
    assert enumerate_chunks([35, 16, 15, 48], 16) == [(0, 0), (0, 16), (1, 0), (3, 0), (3, 16), (3, 32)]


def test_draw_chunks_is_reference_sample():
    assert draw_chunks(1000, 10, seed=42) == random.Random(42).sample(range(1000), 10)


def test_draw_chunks_deterministic_per_seed():
    assert draw_chunks(500, 20, seed=42) == draw_chunks(500, 20, seed=42)
    assert draw_chunks(500, 20, seed=42) != draw_chunks(500, 20, seed=43)


def test_draw_chunks_without_replacement_unique():
    drawn = draw_chunks(50, 50, seed=1)
    assert sorted(drawn) == list(range(50))


def test_draw_chunks_count_guard_names_both_numbers():
    with pytest.raises(NotEnoughChunksError, match=r"101 chunks were requested .* only 100 .*--with-replacement"):
        draw_chunks(100, 101, seed=42)


def test_draw_chunks_with_replacement_allows_more():
    drawn = draw_chunks(10, 25, seed=42, with_replacement=True)
    assert len(drawn) == 25
    assert set(drawn) <= set(range(10))
    assert drawn == random.Random(42).choices(range(10), k=25)


def test_plan_chunks_non_overlapping(manifest):
    entries = read_manifest_entries(manifest)
    plan = plan_chunks(entries, FRAME_COUNTS, FRAMES, count=8, seed=42)
    spans = {(chunk.path, chunk.start_frame) for chunk in plan}
    assert len(spans) == 8
    assert all(chunk.start_frame % FRAMES == 0 for chunk in plan)
    assert all(chunk.start_frame + FRAMES <= FRAME_COUNTS[chunk.video_index] for chunk in plan)


def test_plan_chunks_labels_from_manifest(manifest):
    entries = read_manifest_entries(manifest)
    plan = plan_chunks(entries, FRAME_COUNTS, FRAMES, count=8, seed=42)
    assert [chunk.label for chunk in plan] == [entries[chunk.video_index].label for chunk in plan]


def test_plan_csv_round_trip(tmp_path):
    plan = [PlannedChunk(0, 3, "7", "/videos/a.mp4", 32, 16, 5, "Archery"), PlannedChunk(1, 0, "0", "b.mp4", 0, 16, -1, "")]
    path = write_plan(tmp_path / "plan.csv", plan)
    assert read_plan(path) == plan


def test_manifest_sorted_by_path(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("id,path,action,label\n0,b/z.mp4,x,1\n1,a/y.mp4,y,\n2,/abs/c.mp4,z,2\n")
    entries = read_manifest_entries(manifest)
    assert [entry.entry for entry in entries] == ["/abs/c.mp4", "a/y.mp4", "b/z.mp4"]
    assert entries[1].path == tmp_path / "a" / "y.mp4"
    assert entries[1].label == -1


# ---------------------------------------------------------------------------------------------
# Clip choice of the reconstruction protocol
# ---------------------------------------------------------------------------------------------


def test_select_videos_all_or_seeded_subset():
    assert select_videos(5, None, seed=42) == [0, 1, 2, 3, 4]
    subset = select_videos(100, 10, seed=42)
    assert subset == sorted(random.Random(42).sample(range(100), 10))
    assert subset != select_videos(100, 10, seed=43)


def test_select_videos_rejects_too_many():
    with pytest.raises(ValueError, match="between 1 and the 5 videos"):
        select_videos(5, 6, seed=42)


def test_clip_start_seeded_and_in_range():
    starts = [clip_start(42, index, 100, 16) for index in range(50)]
    assert starts == [clip_start(42, index, 100, 16) for index in range(50)]
    assert all(0 <= start <= 84 for start in starts)
    assert starts != [clip_start(7, index, 100, 16) for index in range(50)]
    assert clip_start(42, 3, 10, 16) == 0


def test_reconstruction_clip_equals_dataset_eval_clip(manifest):
    entries = read_manifest_entries(manifest)
    clips = ReconstructionClips(entries, [3], num_frames=FRAMES, size=32, seed=42)
    dataset = VideoClipDataset([entry.path for entry in entries], FRAMES, 32, random_clips=False, seed=42)
    ours = clips[0]
    assert ours["start_frame"] == clip_start(42, 3, FRAME_COUNTS[3], FRAMES)
    torch.testing.assert_close(ours["video"], dataset[3]["video"])


def test_reconstruction_clip_short_video_padded(manifest):
    entries = read_manifest_entries(manifest)
    item = ReconstructionClips(entries, [2], num_frames=FRAMES, size=32, seed=42)[0]
    assert item["frames_read"] == 8
    assert item["video"].shape == (3, FRAMES, 32, 32)
    torch.testing.assert_close(item["video"][:, 9], item["video"][:, 7])


# ---------------------------------------------------------------------------------------------
# Sharding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_shard_disjoint_and_complete(world_size):
    items = list(range(23))
    shards = [shard(items, rank, world_size) for rank in range(world_size)]
    assert sorted(item for part in shards for item in part) == items
    assert sum(len(part) for part in shards) == len(items)


def test_shard_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank must be in"):
        shard([1, 2], 2, 2)


# ---------------------------------------------------------------------------------------------
# Protocol runs with a stub feature network
# ---------------------------------------------------------------------------------------------


def test_check_clip_length_names_minimum():
    with pytest.raises(ProtocolError, match="at least 9 frames.*asked for 8 frames"):
        check_clip_length(8, StubExtractor())


def test_generation_fvd_equals_fvd_of_features(manifest, tmp_path):
    samples = write_samples(tmp_path / "samples", 4, frames=12)
    config = _generation_config(manifest, tmp_path, samples)
    results = run_chunk_protocol(config, feature_extractor=StubExtractor())

    extractor = StubExtractor()
    plan = read_plan(tmp_path / "out" / "plan.csv")
    real = FeatureStatistics().update(extractor.features(torch.stack([item["video"] for item in ChunkClips(plan, 32)])))
    files = list_sample_files(samples)
    fake_clips = torch.stack([item["video"] for item in SampleClips(files, range(4), FRAMES, 32)])
    fake = FeatureStatistics().update(extractor.features(fake_clips))
    with pytest.warns(UserWarning):
        expected = fvd(real, fake)
    assert results["metrics"]["fvd"] == pytest.approx(expected, rel=1e-12)
    assert results["metrics"]["real_clips"] == 4


def test_generation_plan_matches_reference_draw(manifest, tmp_path):
    samples = write_samples(tmp_path / "samples", 4, frames=12)
    run_chunk_protocol(_generation_config(manifest, tmp_path, samples), feature_extractor=StubExtractor())
    plan = read_plan(tmp_path / "out" / "plan.csv")
    chunks = enumerate_chunks([FRAME_COUNTS[index] for index in range(5)], FRAMES)
    drawn = random.Random(42).sample(range(len(chunks)), 4)
    assert [(chunk.video_index, chunk.start_frame) for chunk in plan] == [chunks[number] for number in drawn]


def test_generation_sample_count_guard(manifest, tmp_path):
    samples = write_samples(tmp_path / "samples", 3, frames=12)
    with pytest.raises(ProtocolError, match="contains 3 videos but the protocol draws 4"):
        run_chunk_protocol(_generation_config(manifest, tmp_path, samples), feature_extractor=StubExtractor())


def test_generation_short_sample_names_file(manifest, tmp_path):
    samples = write_samples(tmp_path / "samples", 4, frames=6)
    with pytest.raises(TooFewFramesError, match=r"0\.mp4.*shorter than the 10 frames"):
        run_chunk_protocol(_generation_config(manifest, tmp_path, samples), feature_extractor=StubExtractor())


def test_generation_worker_error_keeps_type(manifest, tmp_path):
    samples = write_samples(tmp_path / "samples", 4, frames=12)
    (samples / "2.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoReadError, match=r"2\.mp4"):
        run_chunk_protocol(_generation_config(manifest, tmp_path, samples, workers=1), feature_extractor=StubExtractor())


def test_generation_real_stats_cache(manifest, tmp_path):
    samples = write_samples(tmp_path / "samples", 4, frames=12)
    cache = tmp_path / "real.npz"
    first = run_chunk_protocol(_generation_config(manifest, tmp_path, samples, real_stats=str(cache)), feature_extractor=StubExtractor())
    extractor = StubExtractor()
    second = run_chunk_protocol(_generation_config(manifest, tmp_path, samples, real_stats=str(cache)), feature_extractor=extractor)
    assert second["parameters"]["real_statistics"]["loaded_from_cache"]
    assert second["metrics"]["fvd"] == pytest.approx(first["metrics"]["fvd"], rel=1e-12)
    assert extractor.calls == 2  # two batches of generated videos, no real ones


def test_generation_real_stats_other_protocol_rejected(manifest, tmp_path):
    samples = write_samples(tmp_path / "samples", 4, frames=12)
    cache = tmp_path / "real.npz"
    run_chunk_protocol(_generation_config(manifest, tmp_path, samples, real_stats=str(cache)), feature_extractor=StubExtractor())
    with pytest.raises(ProtocolError, match="seed: file '42', requested '43'"):
        run_chunk_protocol(
            _generation_config(manifest, tmp_path, samples, real_stats=str(cache), seed=43), feature_extractor=StubExtractor()
        )


def test_generation_plan_reuse_checks_parameters(manifest, tmp_path):
    samples = write_samples(tmp_path / "samples", 4, frames=12)
    run_chunk_protocol(_generation_config(manifest, tmp_path, samples), feature_extractor=StubExtractor())
    plan = str(tmp_path / "out" / "plan.csv")
    with pytest.raises(ProtocolError, match="num_chunks: plan 4, requested 3"):
        run_chunk_protocol(
            _generation_config(manifest, tmp_path, samples, plan=plan).replace(num_chunks=3), feature_extractor=StubExtractor()
        )


def test_frame_prediction_resizes_both_sets(manifest, tmp_path):
    samples = write_samples(tmp_path / "samples", 4, frames=12, size=48)
    config = ChunkProtocolConfig.for_frame_prediction(
        manifest=str(manifest), output_dir=str(tmp_path / "fp"), samples=str(samples), num_chunks=4, frames=FRAMES,
        clip_size=32, fvd_size=16, progress=False,
    )
    results = run_chunk_protocol(config, feature_extractor=StubExtractor())
    assert results["parameters"]["resolution"] == 16
    assert results["parameters"]["conditioning_frames"] == 5
    assert "then resized to 16 x 16" in results["parameters"]["real_preprocessing"]


def test_reconstruct_clips_windows(tiny_tokenizer_dir):
    model = LARPTokenizer.from_pretrained(tiny_tokenizer_dir).eval()
    clips = torch.rand(2, 3, FRAMES, 32, 32)
    reconstructions, indices = reconstruct_clips(model, clips, "fp32")
    assert reconstructions.shape == clips.shape
    assert indices.shape == (2, 2 * 16)
    with torch.no_grad():
        second_window = model.decode_codes(model.encode(torch.cat([clips[:1, :, 8:], clips[:1, :, 9:].expand(-1, -1, 6, -1, -1)], dim=2)).codes)
    torch.testing.assert_close(reconstructions[0, :, 8:], second_window[0, :, :2].clamp(0, 1))


def test_reconstruction_aggregates_are_clip_means(manifest, tiny_tokenizer_dir, tmp_path):
    model = LARPTokenizer.from_pretrained(tiny_tokenizer_dir).eval()
    results = run_reconstruction(
        _reconstruction_config(manifest, tmp_path, report_clips=0), model, str(tiny_tokenizer_dir),
        feature_extractor=StubExtractor(), lpips_model=StubLPIPS(),
    )
    with open(tmp_path / "rec" / "clips.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5
    for name in ("psnr", "psnr_video_mse", "ssim", "lpips", "mse"):
        assert results["metrics"][name] == pytest.approx(sum(float(row[name]) for row in rows) / 5, rel=1e-9)
    assert results["metrics"]["bits_per_pixel"] == pytest.approx(2 * 16 * 6 / (FRAMES * 32 * 32))


def test_reconstruction_clip_choice_reproducible(manifest, tiny_tokenizer_dir, tmp_path):
    model = LARPTokenizer.from_pretrained(tiny_tokenizer_dir).eval()
    starts = []
    for run, seed in enumerate((42, 42, 5)):
        output = tmp_path / f"run{run}"
        config = _reconstruction_config(manifest, output, seed=seed, report_clips=0)
        run_reconstruction(config, model, "tiny", feature_extractor=StubExtractor(), lpips_model=StubLPIPS())
        with open(output / "rec" / "clips.csv") as handle:
            starts.append([(row["path"], row["start_frame"]) for row in csv.DictReader(handle)])
    assert starts[0] == starts[1]
    assert starts[0] != starts[2]


def test_reconstruction_results_record_protocol(manifest, tiny_tokenizer_dir, lpips_model, tmp_path):
    model = LARPTokenizer.from_pretrained(tiny_tokenizer_dir).eval()
    run_reconstruction(
        _reconstruction_config(manifest, tmp_path, num_videos=2, report_clips=0), model, str(tiny_tokenizer_dir),
        feature_extractor=StubExtractor(), lpips_model=lpips_model,
    )
    results = json.loads((tmp_path / "rec" / "results.json").read_text())
    parameters = results["parameters"]
    for key in ("manifest", "split", "count", "seed", "resolution", "frames", "clip_selection", "video_selection",
                "i3d", "lpips", "model", "precision", "fvd_definition", "metric_definitions"):
        assert key in parameters, key
    assert len(parameters["manifest"]["sha256"]) == 64
    assert parameters["count"] == 2
    assert parameters["model"]["weights"]["sha256"]
    assert len(parameters["lpips"]["files"][0]["sha256"]) == 64
    for key in ("larp_video", "torch", "date"):
        assert key in results["environment"], key
    assert (tmp_path / "rec" / "results.md").read_text().count("| seed | 42 |") == 1


def test_reconstruction_size_must_match_model(manifest, tiny_tokenizer_dir, tmp_path):
    model = LARPTokenizer.from_pretrained(tiny_tokenizer_dir).eval()
    with pytest.raises(ProtocolError, match="model's resolution, 32 x 32, but --size 128"):
        run_reconstruction(
            _reconstruction_config(manifest, tmp_path, size=128), model, "tiny",
            feature_extractor=StubExtractor(), lpips_model=StubLPIPS(),
        )


def test_two_process_gloo_matches_one_process(manifest, tiny_tokenizer_dir, tmp_path):
    samples = write_samples(tmp_path / "samples", 4, frames=12)
    generation = dict(manifest=str(manifest), output_dir=str(tmp_path / "gen2"), samples=str(samples), num_chunks=4,
                      frames=FRAMES, clip_size=32, batch_size=3, progress=False)
    reconstruction = dict(manifest=str(manifest), output_dir=str(tmp_path / "rec2"), frames=FRAMES, batch_size=2,
                          report_clips=2, progress=False)
    arguments = {"generation": generation, "reconstruction": reconstruction, "model": str(tiny_tokenizer_dir),
                 "summary": str(tmp_path / "summary.json")}
    torch.multiprocessing.spawn(distributed_worker, args=(2, str(tmp_path / "init"), arguments), nprocs=2)
    distributed = json.loads((tmp_path / "summary.json").read_text())

    single_generation = run_chunk_protocol(
        ChunkProtocolConfig.for_generation(**{**generation, "output_dir": str(tmp_path / "gen1")}),
        feature_extractor=StubExtractor(),
    )
    model = LARPTokenizer.from_pretrained(tiny_tokenizer_dir).eval()
    single_reconstruction = run_reconstruction(
        ReconstructionConfig(**{**reconstruction, "output_dir": str(tmp_path / "rec1")}), model, str(tiny_tokenizer_dir),
        feature_extractor=StubExtractor(), lpips_model=StubLPIPS(),
    )
    assert distributed["generation"]["fvd"] == pytest.approx(single_generation["metrics"]["fvd"], rel=1e-9)
    for name, value in single_reconstruction["metrics"].items():
        assert distributed["reconstruction"][name] == pytest.approx(value, rel=1e-5), name
    assert (tmp_path / "rec2" / "clips.csv").read_text() == (tmp_path / "rec1" / "clips.csv").read_text()
    assert (tmp_path / "rec2" / "worst-clips.png").is_file()
