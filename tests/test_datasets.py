"""Video lists, manifests and clip datasets for tokenizer training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from larp_video.data.datamodule import VideoDataModule
from larp_video.data.datasets import EpochSampler, VideoClipDataset, parse_skipped
from larp_video.data.manifests import list_labeled_videos, list_videos, read_manifest
from larp_video.data.transforms import FrameGeometry, fit_frames_to_model, fit_to_model, frames_to_tensor
from video_factory import make_test_video

MANIFESTS = Path(__file__).parent / "fixtures" / "manifests"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    return [
        make_test_video(folder / "long.mp4", num_frames=30, width=48, height=40, fps=10.0),
        make_test_video(folder / "short.mp4", num_frames=5, width=40, height=48, fps=10.0),
    ]


def test_ucf101_manifest_resolves_under_root(tmp_path):
    pairs = read_manifest(MANIFESTS / "ucf101_train.csv", root=tmp_path)
    assert pairs[0] == (tmp_path / "data/ucf101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0)
    assert pairs[-1][1] == 100
    assert len(pairs) == 5


def test_k600_manifest_keeps_labels(tmp_path):
    pairs = read_manifest(MANIFESTS / "k600_val.csv", root=tmp_path)
    assert [label for _, label in pairs] == [0, 0, 17, 17, 599]
    assert pairs[3][0] == tmp_path / "data/k600/val/-NMSu3Sn_JU_000048_000058.mp4"


def test_manifest_default_root_is_its_folder():
    pairs = read_manifest(MANIFESTS / "k600_val.csv")
    assert pairs[0][0] == MANIFESTS / "data/k600/val/Zv09PB3YQAs_000010_000020.mp4"


def test_manifests_join_in_order(tmp_path):
    sources = [str(MANIFESTS / "k600_val.csv"), str(MANIFESTS / "ucf101_train.csv")]
    paths = list_videos(sources, root=tmp_path)
    assert len(paths) == 10
    assert paths[0].parts[-3:-1] == ("k600", "val")
    assert paths[-1].name == "v_YoYo_g25_c05.avi"


def test_text_list_and_folder(tmp_path, videos):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# training videos\n{videos[0]}\nshort.mp4\n")
    (tmp_path / "short.mp4").write_bytes(videos[1].read_bytes())
    assert list_videos(listing) == [videos[0], tmp_path / "short.mp4"]
    assert list_labeled_videos(videos[0].parent) == [(videos[0], -1), (videos[1], -1)]


def test_manifest_without_path_column_rejected(tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("id,file\n0,a.mp4\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        read_manifest(manifest)


def test_manifest_with_text_label_rejected(tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("id,path,action,label\n0,a.mp4,run,running\n")
    with pytest.raises(ValueError, match="line 2"):
        read_manifest(manifest)


def test_clip_has_model_shape_and_range(videos):
    dataset = VideoClipDataset(videos, num_frames=8, image_size=32)
    item = dataset[0]
    assert item["video"].shape == (3, 8, 32, 32)
    assert 0.0 <= float(item["video"].min()) <= float(item["video"].max()) <= 1.0
    assert item["skipped"] == ""


def test_short_clip_repeats_last_frame(videos):
    dataset = VideoClipDataset(videos, num_frames=8, image_size=32, random_clips=False)
    clip = dataset[1]["video"]
    for frame in range(5, 8):
        torch.testing.assert_close(clip[:, frame], clip[:, 4])


def test_fixed_clips_repeat_across_calls(videos):
    dataset = VideoClipDataset(videos, num_frames=8, image_size=32, random_clips=False, seed=3)
    torch.testing.assert_close(dataset[0]["video"], dataset[0]["video"])


def test_val_repeats_vary_clip_starts(videos):
    data = VideoDataModule(train=[str(videos[0])], val=[str(videos[0])], num_frames=8, image_size=32,
                           num_workers=0, val_repeats=4)
    data.setup("fit")
    assert len(data.val_dataset) == 4

    clips = [data.val_dataset[item]["video"] for item in range(4)]
    assert len({clip.sum().item() for clip in clips}) > 1
    torch.testing.assert_close(clips[2], data.val_dataset[2]["video"])


def test_uint8_resize_matches_float_path():
    frames = np.random.default_rng(0).integers(0, 256, (4, 72, 96, 3), dtype=np.uint8)
    geometry = FrameGeometry.compute(72, 96, 32, "crop")
    fast = fit_frames_to_model(frames, geometry)
    exact = fit_to_model(frames_to_tensor(frames), geometry)
    assert fast.shape == exact.shape == (3, 4, 32, 32)
    assert float((fast - exact).abs().max()) <= 1.0 / 255 + 1e-6


def test_unreadable_file_is_replaced(tmp_path, videos):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    dataset = VideoClipDataset([broken, videos[0]], num_frames=8, image_size=32)

    item = dataset[0]
    assert item["index"] == 1
    assert item["video"].shape == (3, 8, 32, 32)
    ((path, reason),) = parse_skipped([item["skipped"]])
    assert path == str(broken)
    assert reason


def test_missing_file_counted_on_each_request(tmp_path, videos):
    dataset = VideoClipDataset([tmp_path / "missing.mp4", videos[0]], num_frames=8, image_size=32)
    assert dataset[0]["skipped"]
    assert dataset[0]["skipped"]


def test_all_files_unreadable_raises(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    dataset = VideoClipDataset([broken], num_frames=8, image_size=32, max_skips=3)
    with pytest.raises(RuntimeError, match="none of the 1 videos could be read"):
        dataset[0]


def test_datamodule_batches_with_workers(videos):
    data = VideoDataModule(
        train=[str(path) for path in videos], num_frames=8, image_size=32, batch_size=2, num_workers=1,
        persistent_workers=False,
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["video"].shape == (2, 3, 8, 32, 32)
    assert batch["skipped"] == ["", ""]


def test_deterministic_datamodule_keeps_order(videos):
    data = VideoDataModule(train=[str(path) for path in videos], num_frames=8, image_size=32, batch_size=2,
                           num_workers=0, deterministic=True)
    data.setup("fit")
    first = next(iter(data.train_dataloader()))
    second = next(iter(data.train_dataloader()))
    assert first["index"].tolist() == [0, 1]
    torch.testing.assert_close(first["video"], second["video"])


def test_random_clips_vary(videos):
    dataset = VideoClipDataset(videos[:1], num_frames=8, image_size=32, flip=False)
    clips = [dataset[0]["video"] for _ in range(4)]
    assert any(not torch.equal(clips[0], clip) for clip in clips[1:])


def test_epoch_sampler_repeats_epoch():
    sampler = EpochSampler(6, seed=1)
    sampler.set_epoch(3)
    first = list(sampler)
    assert list(sampler) == first
    assert sorted(item for item, _ in first) == list(range(6))
    sampler.set_epoch(4)
    assert list(sampler) != first


def test_item_seed_fixes_clip(videos):
    dataset = VideoClipDataset(videos[:1], num_frames=8, image_size=32)
    torch.testing.assert_close(dataset[(0, 123)]["video"], dataset[(0, 123)]["video"])


@pytest.mark.parametrize("name", ["repeats", "val_repeats"])
def test_datamodule_rejects_zero_repeats(videos, name):
    with pytest.raises(ValueError, match=f"data.{name} must be at least 1, got 0"):
        VideoDataModule(train=[str(videos[0])], **{name: 0})
