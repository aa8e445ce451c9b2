"""`larp tokenize-dataset`: clip selection, shards, resuming, rank splits and the TokenDataset."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from generation_helpers import cli_worker, save_varied_tokenizer, write_pattern_manifest
from larp_video.cli.main import main
from larp_video.data.token_datamodule import TokenDataModule, split_videos
from larp_video.data.token_dataset import TokenDataset
from larp_video.data.token_shards import find_shards, read_shard, shards_for_rank
from larp_video.data.token_clips import VideoClipStream, clip_starts
from larp_video.data.transforms import FrameGeometry, conditioning_clip, fit_frames_to_model, pad_frames
from larp_video.data.video_io import read_video
from larp_video.evaluation.chunks import enumerate_chunks, read_manifest_entries
from larp_video.pretrained import load_tokenizer
from video_factory import make_test_video

# Tiny tokenizer clips are 8 frames: these videos have 2, 1, 0, 3 and 2 non-overlapping clips.
FRAME_COUNTS = [17, 12, 6, 24, 16]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_pattern_manifest(tmp_path_factory.mktemp("videos"), FRAME_COUNTS)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return save_varied_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def tokenize(manifest, output, tokenizer, *extra):
    return main(["tokenize-dataset", str(manifest), "-o", str(output), "--model", str(tokenizer), "--device", "cpu", *extra])


def shard_tensors(folder):
    return {number: read_shard(path)[0] for number, path in find_shards(folder).items()}


@pytest.fixture(scope="module")
def random_tokens(manifest, tokenizer, tmp_path_factory):
    """Random clips (3 per video, mirrored copies too) with frame-prediction conditions, 2 videos per shard."""
    output = tmp_path_factory.mktemp("random-tokens")
    status = tokenize(
        manifest, output, tokenizer, "--clips-per-video", "3", "--seed", "5", "--shard-size", "2",
        "--flip", "--frame-prediction", "--conditioning-frames", "3",
    )
    assert status == 0
    return output


RANDOM_ARGS = ("--clips-per-video", "3", "--seed", "5", "--shard-size", "2", "--flip", "--frame-prediction",
               "--conditioning-frames", "3")


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def test_clip_starts_chunks_follow_protocol():
    assert clip_starts("chunks", 35, 16, 1, 0, 0) == [start for _, start in enumerate_chunks([35], 16)]
    assert clip_starts("chunks", 35, 16, 1, 0, 0) == [0, 16]
    assert clip_starts("chunks", 15, 16, 1, 0, 0) == []


def test_clip_starts_random_seeded():
    starts = clip_starts("random", 40, 16, 50, seed=3, video_index=7)
    assert starts == clip_starts("random", 40, 16, 50, seed=3, video_index=7)
    assert starts != clip_starts("random", 40, 16, 50, seed=3, video_index=8)
    assert min(starts) >= 0
    assert max(starts) <= 40 - 16
    assert clip_starts("random", 10, 16, 2, seed=3, video_index=0) == [0, 0]


@pytest.mark.parametrize("mode, clips, frames", [("random", 12, 50), ("random", 3, 5), ("chunks", 1, 50)])
def test_clip_stream_equals_reading_each_clip(tmp_path, mode, clips, frames):
    path = make_test_video(tmp_path / "video.mp4", num_frames=frames, width=48, height=40, fps=10.0)
    stream = VideoClipStream([(3, str(path))], 8, 32, mode=mode, clips_per_video=clips, seed=1)
    items = list(stream)
    assert items[-1] == {"video_index": 3, "done": True, "error": None}
    starts = clip_starts(mode, frames, 8, clips, 1, 3)
    assert sorted(item["clip_number"] for item in items[:-1]) == list(range(len(starts)))
    for item in items[:-1]:
        start = starts[item["clip_number"]]
        assert item["start_frame"] == start
        source = read_video(path, start, min(8, frames - start))[0]
        expected = pad_frames(fit_frames_to_model(source, FrameGeometry.compute(40, 48, 32)), 8)
        assert torch.equal(item["clip"], expected), item["clip_number"]


def test_clip_stream_reports_unreadable_video(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    items = list(VideoClipStream([(0, str(broken))], 8, 32))
    assert len(items) == 1
    assert items[0]["done"]
    assert "broken.mp4" in items[0]["error"]


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_shards_for_rank_partition(world_size):
    parts = [shards_for_rank(10, rank, world_size) for rank in range(world_size)]
    flat = [number for part in parts for number in part]
    assert sorted(flat) == list(range(10))
    assert len(flat) == len(set(flat))


def test_shards_for_rank_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        shards_for_rank(4, 2, 2)


def test_conditioning_clip_repeats_last_given_frame():
    video = torch.arange(8.0).reshape(1, 8, 1, 1).expand(3, 8, 2, 2)
    clip = conditioning_clip(video, 3)
    assert clip.shape == video.shape
    assert clip[0, :, 0, 0].tolist() == [0, 1, 2, 2, 2, 2, 2, 2]


def test_split_videos_disjoint_and_seeded():
    held_out = split_videos(list(range(10)), 0.3, seed=1)
    assert len(held_out) == 3
    assert held_out == split_videos(list(range(10)), 0.3, seed=1)


# ---------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------


def test_random_mode_shards_and_index(random_tokens):
    index = json.loads((random_tokens / "index.json").read_text())
    assert index["complete"]
    assert index["num_shards"] == 3
    assert index["total_videos"] == 5
    assert index["total_clips"] == 5 * 3 * 2
    assert index["settings"]["codebook_size"] == 64
    assert index["settings"]["clips_per_video"] == 3
    assert len(index["settings"]["manifest_sha256"]) == 64
    assert (random_tokens / "classes.txt").read_text().splitlines() == ["class0", "class1", "class2"]

    tensors, metadata = read_shard_with_metadata(random_tokens, 0)
    assert tensors["indices"].shape == (12, 16)
    assert tensors["indices"].dtype == torch.int64
    assert tensors["condition"].shape == (12, 16)
    assert tensors["video_index"].tolist() == [0] * 6 + [1] * 6
    assert tensors["flipped"].tolist() == [False, True] * 6
    assert metadata["first_video"] == 0
    assert metadata["end_video"] == 2


def read_shard_with_metadata(folder, number):
    return read_shard(find_shards(folder)[number])


def test_codes_equal_tokenizer_encode(random_tokens, manifest, tokenizer):
    model, _ = load_tokenizer(tokenizer)
    tensors, _ = read_shard_with_metadata(random_tokens, 1)
    entries = read_manifest_entries(manifest)
    row = 8  # video 3's second clip, not mirrored
    video_index, start = int(tensors["video_index"][row]), int(tensors["start_frame"][row])
    frames, info = read_video(entries[video_index].path, start, min(8, FRAME_COUNTS[video_index] - start))
    clip = pad_frames(fit_frames_to_model(frames, FrameGeometry.compute(info.height, info.width, 32)), 8)

    with torch.no_grad():
        expected = model.encode(clip[None]).indices[0]
        expected_condition = model.encode(conditioning_clip(clip, 3)[None]).indices[0]
        mirrored = model.encode(clip.flip(-1)[None]).indices[0]
    assert torch.equal(tensors["indices"][row], expected)
    assert torch.equal(tensors["condition"][row], expected_condition)
    assert torch.equal(tensors["indices"][row + 1], mirrored)
    # The check can fail: the codes depend on the clip and on which frames are given.
    assert not torch.equal(expected, mirrored)
    assert not torch.equal(expected, expected_condition)


def test_chunks_mode_counts(manifest, tokenizer, tmp_path):
    assert tokenize(manifest, tmp_path, tokenizer, "--mode", "chunks") == 0
    dataset = TokenDataset(tmp_path)
    assert len(dataset) == sum(count // 8 for count in FRAME_COUNTS)
    assert dataset.start_frame.tolist() == [0, 8, 0, 0, 8, 16, 0, 8]
    assert dataset.frame_prediction is False


def test_rerun_skips_finished_shards(random_tokens, manifest, tokenizer, capsys):
    before = {path: path.stat().st_mtime_ns for path in find_shards(random_tokens).values()}
    assert tokenize(manifest, random_tokens, tokenizer, *RANDOM_ARGS) == 0
    assert "wrote 0 shards (0 clips), 3 were already done" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in find_shards(random_tokens).values()} == before


def test_resume_after_interrupted_write(random_tokens, manifest, tokenizer, tmp_path):
    copy = tmp_path / "tokens"
    copy.mkdir()
    for path in find_shards(random_tokens).values():
        (copy / path.name).write_bytes(path.read_bytes())
    # An interrupted write: shard 1 is missing and its half-written temporary file is left over.
    (copy / "shard-00001.safetensors").unlink()
    leftover = copy / ".shard-00001.safetensors.1a2b3c4d.tmp"
    leftover.write_bytes(b"half a shard")
    assert not (copy / "index.json").exists()

    assert tokenize(manifest, copy, tokenizer, *RANDOM_ARGS) == 0
    assert not leftover.exists()
    assert (copy / "index.json").is_file()
    resumed, original = shard_tensors(copy), shard_tensors(random_tokens)
    for name in ("indices", "condition", "start_frame", "flipped", "labels"):
        assert torch.equal(resumed[1][name], original[1][name]), name


def test_rank_split_matches_single_run(random_tokens, manifest, tokenizer, tmp_path):
    assert tokenize(manifest, tmp_path, tokenizer, *RANDOM_ARGS, "--rank", "1", "--world-size", "2") == 0
    assert sorted(find_shards(tmp_path)) == [1]
    assert not (tmp_path / "index.json").exists()

    assert tokenize(manifest, tmp_path, tokenizer, *RANDOM_ARGS, "--rank", "0", "--world-size", "2") == 0
    assert sorted(find_shards(tmp_path)) == [0, 1, 2]
    assert (tmp_path / "index.json").is_file()
    split, single = shard_tensors(tmp_path), shard_tensors(random_tokens)
    for number in range(3):
        assert torch.equal(split[number]["indices"], single[number]["indices"]), number


def test_two_processes_match_single_run(random_tokens, manifest, tokenizer, tmp_path):
    argv = ["tokenize-dataset", str(manifest), "-o", str(tmp_path / "tokens"), "--model", str(tokenizer), *RANDOM_ARGS]
    torch.multiprocessing.spawn(cli_worker, args=(2, str(tmp_path / "init"), argv), nprocs=2)
    index = json.loads((tmp_path / "tokens" / "index.json").read_text())
    assert index["complete"]
    split, single = shard_tensors(tmp_path / "tokens"), shard_tensors(random_tokens)
    assert sorted(split) == [0, 1, 2]
    for number in range(3):
        assert torch.equal(split[number]["indices"], single[number]["indices"]), number


def test_other_settings_rejected(random_tokens, manifest, tokenizer, capsys):
    changed = [value if value != "5" else "6" for value in RANDOM_ARGS]  # another seed
    assert tokenize(manifest, random_tokens, tokenizer, *changed) == 2
    assert "seed: 5 in the file, 6 now" in capsys.readouterr().err


def test_unreadable_video_is_skipped(manifest, tokenizer, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    listing = tmp_path / "manifest.csv"
    lines = manifest.read_text().splitlines()
    rows = [line.replace("video0", str(manifest.parent / "video0")) for line in lines[1:3]]
    listing.write_text("\n".join([lines[0], *rows, "9,broken.mp4,class0,0"]) + "\n")

    assert tokenize(listing, tmp_path / "tokens", tokenizer, "--shard-size", "2") == 0
    index = json.loads((tmp_path / "tokens" / "index.json").read_text())
    assert [video["path"].endswith("broken.mp4") for video in index["skipped_videos"]] == [True]
    assert index["total_clips"] == 2


# ---------------------------------------------------------------------------------------------
# Dataset and data module
# ---------------------------------------------------------------------------------------------


def test_token_dataset_items(random_tokens):
    dataset = TokenDataset(random_tokens)
    assert len(dataset) == 30
    item = dataset[3]
    assert item["tokens"].dtype == torch.int64
    assert item["tokens"].shape == (16,)
    assert item["condition"].shape == (16,)
    assert int(item["label"]) == 0
    assert dataset.num_classes == 3
    assert dataset.class_names == {0: "class0", 1: "class1", 2: "class2"}


def test_token_dataset_items_match_shards(random_tokens):
    dataset = pickle.loads(pickle.dumps(TokenDataset(random_tokens)))
    shard, _ = read_shard_with_metadata(random_tokens, 2)
    for row in range(6):
        item = dataset[24 + row]  # shard 2 starts after 2 shards of 12 clips
        assert torch.equal(item["tokens"], shard["indices"][row]), row
        assert torch.equal(item["condition"], shard["condition"][row]), row


def test_token_dataset_video_subset(random_tokens):
    dataset = TokenDataset(random_tokens, videos=[1, 3])
    assert len(dataset) == 12
    assert set(dataset.video_index.tolist()) == {1, 3}


def test_token_dataset_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenize-dataset"):
        TokenDataset(tmp_path / "absent")


def test_datamodule_val_fraction_splits_by_video(random_tokens):
    data = TokenDataModule(str(random_tokens), val_fraction=0.4, batch_size=4)
    data.setup("fit")
    train_videos = set(data.train_dataset.video_index.tolist())
    val_videos = set(data.val_dataset.video_index.tolist())
    assert len(val_videos) == 2
    assert not train_videos & val_videos
    batch = next(iter(data.train_dataloader()))
    assert batch["tokens"].shape == (4, 16)


def test_no_temporary_files_left(random_tokens):
    assert [name for name in os.listdir(random_tokens) if name.endswith(".tmp")] == []
