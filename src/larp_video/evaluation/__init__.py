"""Evaluation metrics (FVD with I3D features, LPIPS-VGG, PSNR, SSIM, token statistics) and the
published evaluation protocols built on them."""

from larp_video.evaluation.chunks import NotEnoughChunksError, ProtocolError
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
from larp_video.evaluation.protocols import ChunkProtocolConfig, run_chunk_protocol, write_chunk_plan
from larp_video.evaluation.reconstruction_protocol import ReconstructionConfig, run_reconstruction
from larp_video.evaluation.report import ExtremeClips, write_report
from larp_video.evaluation.weights import WeightsNotFoundError

__all__ = [
    "ChunkProtocolConfig",
    "CodebookUsage",
    "ExtremeClips",
    "FeatureStatistics",
    "I3D",
    "LPIPS",
    "NotEnoughChunksError",
    "ProtocolError",
    "RankDeficientCovarianceWarning",
    "ReconstructionConfig",
    "WeightsNotFoundError",
    "bits_per_pixel",
    "frechet_distance",
    "fvd",
    "kinetics400_class_names",
    "load_i3d",
    "load_lpips",
    "lpips_per_video",
    "psnr_per_video",
    "run_chunk_protocol",
    "run_reconstruction",
    "ssim_per_video",
    "video_lpips",
    "write_chunk_plan",
    "write_report",
]
