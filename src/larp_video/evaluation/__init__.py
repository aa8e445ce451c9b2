"""Evaluation metrics: FVD with I3D features, LPIPS-VGG, PSNR, SSIM and token statistics."""

from larp_video.evaluation.fvd import FeatureStatistics, RankDeficientCovarianceWarning, frechet_distance, fvd
from larp_video.evaluation.i3d import I3D, kinetics400_class_names, load_i3d
from larp_video.evaluation.lpips import LPIPS, load_lpips, video_lpips
from larp_video.evaluation.metrics import (
    CodebookUsage,
    bits_per_pixel,
    lpips_per_video,
    psnr_per_video,
    ssim_per_video,
)
from larp_video.evaluation.weights import WeightsNotFoundError

__all__ = [
    "CodebookUsage",
    "FeatureStatistics",
    "I3D",
    "LPIPS",
    "RankDeficientCovarianceWarning",
    "WeightsNotFoundError",
    "bits_per_pixel",
    "frechet_distance",
    "fvd",
    "kinetics400_class_names",
    "load_i3d",
    "load_lpips",
    "lpips_per_video",
    "psnr_per_video",
    "ssim_per_video",
    "video_lpips",
]
