"""Entry point of the ``larp`` command line.

Each subcommand lives in its own module with ``add_parser(subparsers)``, which registers the
parser and sets ``run(args) -> int`` as its handler. Modules import torch and the models inside
their handlers, so ``larp --help`` stays fast. ``larp train`` hands its arguments to
LightningCLI unparsed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from larp_video import __version__
from larp_video.cli.common import UsageError

logger = logging.getLogger(__name__)

# Modules that define ``add_parser``; the order is the order of ``larp --help``.
SUBCOMMAND_MODULES = (
    "larp_video.cli.tokenize",
    "larp_video.cli.decode",
    "larp_video.cli.reconstruct",
    "larp_video.cli.info",
    "larp_video.cli.convert",
    "larp_video.cli.eval",
    "larp_video.cli.tokenize_dataset",
    "larp_video.cli.sample",
    "larp_video.cli.predict",
    "larp_video.cli.export_generator",
)

# Subcommands that parse their own arguments (LightningCLI), mapped to the module whose
# ``main(argv)`` runs them.
PASSTHROUGH_COMMANDS = {
    "train": "larp_video.cli.train",
}

LOGGING_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="larp",
        description="Tokenize, reconstruct and generate videos with LARP.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    for name, module_name in PASSTHROUGH_COMMANDS.items():
        subparsers.add_parser(name, help=importlib.import_module(module_name).HELP, add_help=False)
    return parser


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    # -v shows larp's own debug messages, not those of every library (matplotlib, PIL, ...).
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    if verbose:
        logging.getLogger("larp_video").setLevel(logging.DEBUG)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that describe bad input or a failed read or write; the CLI prints them
    in one line, and ``larp -v`` logs the traceback too."""
    from safetensors import SafetensorError

    from larp_video.config import ConfigError
    from larp_video.data.token_shards import TokenShardError
    from larp_video.data.video_io import VideoReadError
    from larp_video.evaluation.chunks import ManifestError
    from larp_video.evaluation.chunks import ProtocolError
    from larp_video.generation.requests import SamplingRequestError
    from larp_video.models.hub import ModelFileError
    from larp_video.models.released import ReleasedCheckpointError
    from larp_video.video_tokens import TokenFileError

    return (
        UsageError,
        ConfigError,
        VideoReadError,
        OSError,  # FileNotFoundError, PermissionError, IsADirectoryError, a full disk, ...
        SafetensorError,
        TokenFileError,
        ReleasedCheckpointError,
        ModelFileError,
        ManifestError,
        ProtocolError,
        TokenShardError,
        SamplingRequestError,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    # `larp -q train ...`: the logging flags come before a command that parses its own arguments.
    flags = 0
    while flags < len(argv) and argv[flags] in LOGGING_FLAGS:
        flags += 1
    if flags < len(argv) and argv[flags] in PASSTHROUGH_COMMANDS:
        leading_flags = set(argv[:flags])
        verbose = bool(leading_flags & {"-v", "--verbose"})
        quiet = bool(leading_flags & {"-q", "--quiet"})
        configure_logging(verbose=verbose, quiet=quiet)
        module = importlib.import_module(PASSTHROUGH_COMMANDS[argv[flags]])
        return _run_reporting_errors(lambda: module.main(argv[flags + 1 :]))

    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    return _run_reporting_errors(lambda: args.run(args))


def _run_reporting_errors(handler) -> int:
    try:
        status = handler()
    except KeyboardInterrupt:
        print("larp: interrupted", file=sys.stderr)
        return 130
    except user_error_types() as error:
        logger.debug("the command failed", exc_info=True)
        print(f"larp: error: {error}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
