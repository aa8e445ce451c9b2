"""LPIPS-VGG: carrier weights, sanity values on real frames, gradients and bf16 autocast.

The real images are frames of the bundled cockatoo clip decoded with PyAV, downscaled to
228 x 128 and centre-cropped to 128 x 128. The "different image" is a synthetic natural-looking
image (colour noise with a 1/f amplitude spectrum). Values measured with these inputs on the
carrier weights: identical 0, Gaussian noise of sigma 0.1 about 0.55, different image about 0.83.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from larp_video.evaluation.lpips import LPIPS, convert_torchvision_lpips, load_lpips, video_lpips


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_lpips("carrier", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def frames(demo_clip_path) -> torch.Tensor:
    """(8, 3, 128, 128) float frames in [0, 1]: every 25th of the first 200 frames."""
    with av.open(str(demo_clip_path)) as container:
        decoded = [frame.to_ndarray(format="rgb24", width=228, height=128) for _, frame in zip(range(200), container.decode(video=0))]
    picked = np.stack(decoded[::25])[:, :, 50:178]  # (8, 128, 128, 3)
    return torch.from_numpy(picked).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(scope="module")
def demo_clip_path(request):
    return request.config.rootpath / "assets" / "demo" / "cockatoo.mp4"


def _one_over_f_image(seed: int, size: int = 128) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    frequencies = torch.fft.fftfreq(size)
    radius = (frequencies[:, None] ** 2 + frequencies[None, :] ** 2).sqrt().clamp(min=1.0 / size)
    spectrum = torch.randn(3, size, size, generator=generator, dtype=torch.complex64) / radius
    image = torch.fft.ifft2(spectrum).real
    image = (image - image.mean()) / image.std() * 0.2 + 0.5
    return image.clamp(0.0, 1.0)[None]  # (1, 3, H, W)


def _noisy(image: torch.Tensor, sigma: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (image + sigma * torch.randn(image.shape, generator=generator)).clamp(0.0, 1.0)


def test_identical_images_zero(model, frames):
    assert model(frames[:2], frames[:2], normalize=True).abs().max().item() == 0.0


def test_gaussian_noise_value(model, frames):
    distance = model(frames[:1], _noisy(frames[:1], 0.1), normalize=True).item()

    assert 0.45 < distance < 0.65


def test_different_image_value(model, frames):
    distance = model(frames[:1], _one_over_f_image(1), normalize=True).item()

    assert 0.75 < distance < 0.95


def test_distance_grows_with_noise(model, frames):
    distances = [model(frames[:1], _noisy(frames[:1], sigma), normalize=True).item() for sigma in (0.02, 0.05, 0.1)]

    assert distances == sorted(distances)


def test_minus_one_to_one_input(model, frames):
    noisy = _noisy(frames[:1], 0.1)

    from_unit = model(frames[:1], noisy, normalize=True)
    from_signed = model(frames[:1] * 2 - 1, noisy * 2 - 1)

    torch.testing.assert_close(from_unit, from_signed)


def test_gradient_reaches_input_only(model, frames):
    fake = _noisy(frames[:2], 0.05).requires_grad_(True)

    model(frames[:2], fake, normalize=True).sum().backward()

    assert fake.grad is not None
    assert fake.grad.abs().sum() > 0
    assert all(parameter.grad is None and not parameter.requires_grad for parameter in model.parameters())


def test_bf16_autocast_close_to_fp32(model, frames):
    noisy = _noisy(frames[:2], 0.1)

    full = model(frames[:2], noisy, normalize=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(frames[:2], noisy, normalize=True)

    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, atol=0.01, rtol=0.0)


def test_rejects_mismatched_shapes(model, frames):
    with pytest.raises(ValueError, match="same shape"):
        model(frames[:2], frames[:1])


def test_rejects_tiny_images(model):
    with pytest.raises(ValueError, match="at least 16"):
        model(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_video_lpips_is_frame_mean(model, frames):
    real = frames[:4].permute(1, 0, 2, 3).unsqueeze(0)  # (1, 3, 4, H, W)
    fake = _noisy(real, 0.05)

    per_video = video_lpips(model, real, fake, batch_size=3)
    per_frame = model(real[0].transpose(0, 1), fake[0].transpose(0, 1), normalize=True)

    assert per_video.shape == (1,)
    torch.testing.assert_close(per_video, per_frame.mean().view(1))


def test_video_lpips_random_frames(model, frames):
    real = frames.view(2, 4, 3, 128, 128).transpose(1, 2)  # (2, 3, 4, H, W)
    fake = _noisy(real, 0.05)

    picked_a = video_lpips(model, real, fake, frames_per_clip=2, generator=torch.Generator().manual_seed(3))
    picked_b = video_lpips(model, real, fake, frames_per_clip=2, generator=torch.Generator().manual_seed(3))
    all_frames = video_lpips(model, real, fake, frames_per_clip=4, generator=torch.Generator().manual_seed(3))

    assert picked_a.shape == (2,)
    torch.testing.assert_close(picked_a, picked_b)
    torch.testing.assert_close(all_frames, video_lpips(model, real, fake))


def test_video_lpips_rejects_bad_frame_count(model, frames):
    real = frames[:4].permute(1, 0, 2, 3).unsqueeze(0)

    with pytest.raises(ValueError, match="frames_per_clip"):
        video_lpips(model, real, real, frames_per_clip=5)


def test_torchvision_names_convert():
    # torchvision's vgg16.features puts its 13 convolutions at these indices of the Sequential.
    conv_indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    ours = LPIPS().state_dict()
    vgg16_state = {}
    for our_index, their_index in enumerate(conv_indices):
        vgg16_state[f"features.{their_index}.weight"] = ours[f"vgg.convs.{our_index}.weight"]
        vgg16_state[f"features.{their_index}.bias"] = ours[f"vgg.convs.{our_index}.bias"]
    vgg16_state["classifier.0.weight"] = torch.zeros(1)
    heads_state = {f"lin{index}.model.1.weight": ours[f"heads.{index}.weight"] for index in range(5)}

    converted = convert_torchvision_lpips(vgg16_state, heads_state)

    assert converted.keys() == ours.keys()
    LPIPS().load_state_dict(converted)
