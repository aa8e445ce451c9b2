"""I3D for FVD: carrier weights, input contract, batching and plausible Kinetics classes."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from larp_video.evaluation.i3d import (
    I3D,
    MIN_FRAMES,
    TorchScriptI3D,
    _same_padding,
    convert_videogpt_i3d,
    kinetics400_class_names,
    load_i3d,
)

# Kinetics-400 classes that describe handling or watching an animal, for the hand-held bird clip.
ANIMAL_CLASSES = {
    "petting animal (not cat)",
    "petting cat",
    "feeding birds",
    "feeding goats",
    "feeding fish",
    "grooming dog",
    "grooming horse",
    "milking cow",
    "shearing sheep",
    "training dog",
    "walking the dog",
    "holding snake",
    "riding or walking with horse",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_i3d("carrier", cache_dir=tmp_path_factory.mktemp("cache"))


def _small_clips(count: int, frames: int = MIN_FRAMES, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(count, 3, frames, size, size, generator=generator)


def test_same_padding_matches_tensorflow():
    # TensorFlow SAME: total = (ceil(n / s) - 1) * s + k - n, split with the extra pixel at the end.
    assert _same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    assert _same_padding((8, 56, 56), (3, 3, 3), (2, 2, 2)) == [0, 1, 0, 1, 0, 1]
    assert _same_padding((4, 14, 14), (1, 1, 1), (1, 1, 1)) == [0, 0, 0, 0, 0, 0]


def test_carrier_model_size(model):
    assert isinstance(model, I3D)
    assert sum(parameter.numel() for parameter in model.parameters()) == 12_682_704
    assert not any(parameter.requires_grad for parameter in model.parameters())


def test_class_names_count():
    names = kinetics400_class_names()

    assert len(set(names)) == 400
    assert names[0] == "abseiling"
    assert names[-1] == "zumba"


def test_rejects_float_out_of_range(model):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.features(_small_clips(1) * 2.0 - 1.0)


def test_rejects_integer_dtype(model):
    with pytest.raises(TypeError, match="uint8"):
        model.features((_small_clips(1) * 255).to(torch.int64))


def test_rejects_too_few_frames(model):
    with pytest.raises(ValueError, match=f"at least {MIN_FRAMES} frames.*got {MIN_FRAMES - 1}"):
        model.features(_small_clips(1, frames=MIN_FRAMES - 1))


def test_network_fails_below_min_frames(model):
    clips = torch.zeros(1, 3, MIN_FRAMES - 1, 224, 224)

    with pytest.raises(RuntimeError):
        model(clips)


def test_rejects_four_dimensional_input(model):
    with pytest.raises(ValueError, match="5 dimensions|dimensions"):
        model.features(torch.rand(3, 9, 32, 32))


def test_rejects_ambiguous_layout(model):
    with pytest.raises(ValueError, match="layout="):
        model.features(torch.rand(1, 3, 9, 32, 3))


def test_features_shape_at_min_frames(model):
    features = model.features(_small_clips(1))

    assert features.shape == (1, 400)
    assert features.dtype == torch.float32


def test_batch_size_does_not_change_features(model):
    clips = _small_clips(2)

    one_by_one = model.features(clips, batch_size=1)
    together = model.features(clips, batch_size=2)

    torch.testing.assert_close(one_by_one, together, atol=1e-4, rtol=0)


def test_layouts_and_uint8_agree(model):
    clips_uint8 = (_small_clips(2) * 255).round().to(torch.uint8)
    channels_first = model.features(clips_uint8)

    channels_last = model.features(clips_uint8.permute(0, 2, 3, 4, 1))
    as_float = model.features(clips_uint8.float() / 255.0)

    torch.testing.assert_close(channels_last, channels_first, atol=1e-5, rtol=0)
    torch.testing.assert_close(as_float, channels_first, atol=1e-5, rtol=0)


def test_bird_clip_top_classes(model, demo_clip):
    # 16 frames of the hand-held cockatoo clip, downscaled to 398 x 224 and centre-cropped to 224 x 224.
    with av.open(str(demo_clip)) as container:
        frames = [frame.to_ndarray(format="rgb24", width=398, height=224) for _, frame in zip(range(16), container.decode(video=0))]
    clip = torch.from_numpy(np.stack(frames)[:, :, 87 : 87 + 224])[None]  # (1, T, H, W, 3) uint8

    logits = model.features(clip)[0]

    names = kinetics400_class_names()
    top5 = {names[index] for index in logits.topk(5).indices.tolist()}
    assert top5 & ANIMAL_CLASSES, f"no animal class in the top 5: {sorted(top5)}"


def test_videogpt_names_convert():
    ours = I3D(batch_norm_eps=1e-5).state_dict()
    renames = {"blocks.": "", "mixed_": "Mixed_", "conv3d_": "Conv3d_", ".conv.": ".conv3d."}
    branches = {"branch_0": "b0", "branch_1a": "b1a", "branch_1b": "b1b", "branch_2a": "b2a", "branch_2b": "b2b", "branch_3b": "b3b"}
    videogpt = {}
    for key, value in ours.items():
        name = key
        for old, new in renames.items():
            name = name.replace(old, new)
        for old, new in branches.items():
            name = name.replace(f".{old}.", f".{new}.")
        videogpt[name] = value.clone()
    videogpt["Mixed_4f.b2b.bn.num_batches_tracked"] = torch.tensor(0)

    assert "Mixed_4f.b2b.conv3d.weight" in videogpt
    assert "Conv3d_1a_7x7.bn.running_var" in videogpt
    assert "logits.conv3d.bias" in videogpt
    converted = convert_videogpt_i3d(videogpt)
    assert converted.keys() == ours.keys()
    I3D(batch_norm_eps=1e-5).load_state_dict(converted)


class _FakeStyleGANV(torch.nn.Module):
    """Stands in for StyleGAN-V's TorchScript I3D: returns its input range and flags."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        flags = torch.tensor([float(rescale), float(resize), float(return_features)])
        summary = torch.stack([x.min(), x.max()]) * self.scale
        return torch.cat([summary, flags, torch.zeros(395)]).expand(x.shape[0], -1)


def test_torchscript_wrapper_passes_minus_one_to_one():
    wrapper = TorchScriptI3D(_FakeStyleGANV())
    videos = torch.zeros(2, 3, MIN_FRAMES, 8, 8, dtype=torch.uint8)
    videos[:, :, 0] = 255

    output = wrapper.features(videos)

    assert output.shape == (2, 400)
    assert output[0, :2].tolist() == [-1.0, 1.0]
    assert output[0, 2:5].tolist() == [0.0, 1.0, 1.0]
