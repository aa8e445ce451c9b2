"""`larp sample` and `larp predict` end to end with tiny models, and the sample-index rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from eval_helpers import StubExtractor
from generation_helpers import cli_worker, save_tiny_generator, save_varied_tokenizer, write_pattern_manifest
from larp_video.cli.main import main
from larp_video.data.video_io import probe_video, read_video
from larp_video.evaluation.clip_reading import list_sample_files
from larp_video.generation.requests import (
    SampleRequest,
    class_requests,
    requests_for_rank,
    resolve_class,
    sample_seed,
)
from larp_video.models.generator import LARPGenerator

FRAME_COUNTS = [17, 12, 24, 16]  # 2 + 1 + 3 + 2 = 8 non-overlapping 8-frame chunks


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return save_varied_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    return save_tiny_generator(tmp_path_factory.mktemp("generator"))


@pytest.fixture(scope="module")
def fp_generator(tmp_path_factory):
    return save_tiny_generator(tmp_path_factory.mktemp("fp-generator"), mode="frame_prediction")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_pattern_manifest(tmp_path_factory.mktemp("videos"), FRAME_COUNTS)


def sample(generator, tokenizer, output, *extra):
    return main(["sample", "--generator", str(generator), "--tokenizer", str(tokenizer), "-o", str(output), *extra])


def frames_of(folder):
    return {path.name: read_video(path)[0] for path in sorted(folder.glob("*.mp4"))}


# ---------------------------------------------------------------------------------------------
# Requests, seeds and ranks
# ---------------------------------------------------------------------------------------------


def test_sample_seed_depends_on_seed_and_index():
    assert sample_seed(0, 5) == sample_seed(0, 5)
    assert len({sample_seed(0, index) for index in range(100)}) == 100
    assert sample_seed(0, 1) != sample_seed(1, 0)
    assert 0 <= sample_seed(7, 3) < 2**63


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_requests_for_rank_partition(world_size):
    requests = [SampleRequest(index) for index in range(11)]
    parts = [requests_for_rank(requests, rank, world_size) for rank in range(world_size)]
    indices = sorted(request.index for part in parts for request in part)
    assert indices == list(range(11))
    assert all(request.index % world_size == rank for rank, part in enumerate(parts) for request in part)


def test_class_requests_numbering():
    requests = class_requests([2, 0], 2, {0: "run", 2: "jump"})
    assert [(r.index, r.label, r.class_name) for r in requests] == [(0, 2, "jump"), (1, 2, "jump"), (2, 0, "run"), (3, 0, "run")]
    assert requests[3].file_name == "000003.mp4"


def test_resolve_class_by_name_id_and_null():
    names = {0: "Run", 1: "jump"}
    assert resolve_class("run", names, 2) == 0
    assert resolve_class("1", names, 2) == 1
    assert resolve_class("null", names, 2) == -1
    with pytest.raises(ValueError, match="out of range"):
        resolve_class("2", names, 2)


def test_row_generators_make_rows_independent_of_batch(generator):
    model = LARPGenerator.from_pretrained(generator).eval()
    labels = torch.tensor([0, 1, 2])
    streams = [torch.Generator().manual_seed(seed) for seed in (10, 11, 12)]
    batched = model.generate(labels, cfg_scale=1.25, generator=streams)
    for row, seed in enumerate((10, 11, 12)):
        alone = model.generate(labels[row : row + 1], cfg_scale=1.25, generator=[torch.Generator().manual_seed(seed)])
        assert torch.equal(alone[0], batched[row]), row


# ---------------------------------------------------------------------------------------------
# larp sample
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def class_samples(generator, tokenizer, tmp_path_factory):
    output = tmp_path_factory.mktemp("samples")
    assert sample(generator, tokenizer, output, "--class", "class1", "--class", "2", "-n", "2", "--fps", "8", "--batch-size", "3") == 0
    return output


def test_sample_writes_one_video_per_sample(class_samples):
    files = sorted(path.name for path in class_samples.glob("*.mp4"))
    assert files == ["000000.mp4", "000001.mp4", "000002.mp4", "000003.mp4"]
    info = probe_video(class_samples / "000002.mp4")
    assert info.num_frames == 8
    assert (info.width, info.height) == (32, 32)
    assert info.fps == pytest.approx(8.0)


def test_sample_record_lists_parameters_and_seeds(class_samples):
    record = json.loads((class_samples / "samples.json").read_text())
    assert record["status"] == "complete"
    assert record["parameters"]["cfg_scale"] == 1.25
    assert record["parameters"]["samples"] == 4
    assert [s["class"] for s in record["samples"]] == ["class1", "class1", "class2", "class2"]
    assert [s["label"] for s in record["samples"]] == [1, 1, 2, 2]
    assert record["samples"][3]["seed"] == sample_seed(0, 3)


def test_sample_writes_grids(class_samples):
    with Image.open(class_samples / "grid.gif") as gif:
        assert gif.n_frames == 8
    assert Image.open(class_samples / "grid.png").size[0] > 0


def test_sample_refuses_folder_with_videos(class_samples, generator, tokenizer, capsys):
    assert sample(generator, tokenizer, class_samples, "--class", "1") == 2
    assert "pass --resume" in capsys.readouterr().err


ONE_BY_ONE = ("--class", "class1", "--class", "2", "-n", "2", "--fps", "8", "--batch-size", "1")


@pytest.fixture(scope="module")
def one_by_one_samples(generator, tokenizer, tmp_path_factory):
    # Batches of one: a video decoded alone and in a batch can differ in the last bit on CPUs
    # whose kernels depend on the batch shape, so exact file comparisons use batches of one.
    output = tmp_path_factory.mktemp("one-by-one")
    assert sample(generator, tokenizer, output, *ONE_BY_ONE) == 0
    return output


def test_sample_resume_makes_missing_videos_only(one_by_one_samples, generator, tokenizer, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in one_by_one_samples.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "000001.mp4").unlink()
    kept = (copy / "000003.mp4").stat().st_mtime_ns

    assert sample(generator, tokenizer, copy, *ONE_BY_ONE, "--resume") == 0

    assert (copy / "000003.mp4").stat().st_mtime_ns == kept
    assert np.array_equal(read_video(copy / "000001.mp4")[0], read_video(one_by_one_samples / "000001.mp4")[0])


def test_sample_resume_rejects_other_settings(class_samples, generator, tokenizer, capsys):
    args = ("--class", "class1", "--class", "2", "-n", "2", "--fps", "8", "--resume", "--seed", "3")
    assert sample(generator, tokenizer, class_samples, *args) == 2
    assert "seed: 0 before, 3 now" in capsys.readouterr().err


def test_sample_unknown_class_lists_names(generator, tokenizer, tmp_path, capsys):
    assert sample(generator, tokenizer, tmp_path, "--class", "swim") == 2
    assert "0=class0, 1=class1, 2=class2" in capsys.readouterr().err


def test_sample_same_files_on_two_processes(one_by_one_samples, generator, tokenizer, tmp_path):
    argv = ["sample", "--generator", str(generator), "--tokenizer", str(tokenizer), "-o", str(tmp_path / "out"), *ONE_BY_ONE]
    torch.multiprocessing.spawn(cli_worker, args=(2, str(tmp_path / "init"), argv), nprocs=2)
    single, split = frames_of(one_by_one_samples), frames_of(tmp_path / "out")
    assert sorted(split) == sorted(single)
    for name in single:
        assert np.array_equal(split[name], single[name]), name
    assert json.loads((tmp_path / "out" / "samples.json").read_text())["world_size"] == 2


class ShortClipExtractor(StubExtractor):
    min_frames = 1  # the tiny tokenizer makes 8-frame clips


def test_sample_plan_files_match_eval(manifest, generator, tokenizer, tmp_path, monkeypatch):
    eval_args = ["eval", "generation", "--manifest", str(manifest), "--frames", "8", "--size", "32", "--num-chunks", "5"]
    assert main([*eval_args, "--plan-only", "-o", str(tmp_path / "plan")]) == 0
    plan = tmp_path / "plan" / "plan.csv"
    assert sample(generator, tokenizer, tmp_path / "samples", "--plan", str(plan), "--batch-size", "2") == 0

    names = [path.name for path in list_sample_files(tmp_path / "samples")]
    assert names == [f"{index:06d}.mp4" for index in range(5)]
    record = json.loads((tmp_path / "samples" / "samples.json").read_text())
    with open(plan) as handle:
        plan_labels = [int(line.split(",")[6]) for line in handle.read().splitlines()[1:]]
    assert [s["label"] for s in record["samples"]] == plan_labels

    monkeypatch.setattr("larp_video.evaluation.protocols.load_feature_extractor", lambda source, device: ShortClipExtractor())
    assert main([*eval_args, "--plan", str(plan), "--samples", str(tmp_path / "samples"), "-o", str(tmp_path / "eval")]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["metrics"]["generated_clips"] == 5


def test_sample_frame_prediction_plan(manifest, fp_generator, tokenizer, tmp_path):
    args = ["eval", "frame-prediction", "--manifest", str(manifest), "--frames", "8", "--size", "32", "--num-chunks", "3"]
    assert main([*args, "--plan-only", "-o", str(tmp_path / "plan")]) == 0
    status = sample(fp_generator, tokenizer, tmp_path / "samples", "--plan", str(tmp_path / "plan" / "plan.csv"),
                    "--conditioning-frames", "3")
    assert status == 0
    assert len(list((tmp_path / "samples").glob("*.mp4"))) == 3
    record = json.loads((tmp_path / "samples" / "samples.json").read_text())
    assert record["parameters"]["cfg_scale"] == 1.0
    assert record["samples"][0]["video"].endswith(".mp4")


def test_sample_frame_prediction_needs_plan(fp_generator, tokenizer, tmp_path, capsys):
    assert sample(fp_generator, tokenizer, tmp_path, "--class", "1") == 2
    assert "larp predict" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# larp predict
# ---------------------------------------------------------------------------------------------


def test_predict_writes_clip_and_side_by_side(manifest, fp_generator, tokenizer, tmp_path, capsys):
    video = manifest.parent / "video02.mp4"
    output = tmp_path / "predicted.mp4"
    status = main(["predict", str(video), "--generator", str(fp_generator), "--tokenizer", str(tokenizer),
                   "--frames", "3", "--start-frame", "4", "-o", str(output)])
    assert status == 0
    assert "PSNR" in capsys.readouterr().out
    assert probe_video(output).num_frames == 8
    side = probe_video(tmp_path / "predicted-side-by-side.mp4")
    assert (side.width, side.height, side.num_frames) == (64, 32, 8)
    assert (tmp_path / "predicted-grid.png").is_file()
    record = json.loads((tmp_path / "predicted-prediction.json").read_text())
    assert record["conditioning_frames"] == 3
    assert record["start_frame"] == 4


def test_predict_without_continuation_skips_side_by_side(manifest, fp_generator, tokenizer, tmp_path):
    video = manifest.parent / "video01.mp4"  # 12 frames: frames 8 to 10 are given, no whole clip follows
    status = main(["predict", str(video), "--generator", str(fp_generator), "--tokenizer", str(tokenizer),
                   "--frames", "3", "--start-frame", "8", "-o", str(tmp_path / "out.mp4")])
    assert status == 0
    assert probe_video(tmp_path / "out.mp4").num_frames == 8
    assert not (tmp_path / "out-side-by-side.mp4").exists()


def test_predict_rejects_class_conditional_generator(manifest, generator, tokenizer, tmp_path, capsys):
    status = main(["predict", str(manifest.parent / "video00.mp4"), "--generator", str(generator),
                   "--tokenizer", str(tokenizer), "-o", str(tmp_path / "out.mp4")])
    assert status == 2
    assert "class-conditional" in capsys.readouterr().err
