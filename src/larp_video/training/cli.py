"""The LightningCLI behind ``larp train``."""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import warnings
from typing import Optional

import torch

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.cli import LightningCLI

from larp_video.cli.common import UsageError

logger = logging.getLogger(__name__)


class LarpCLI(LightningCLI):
    """LightningCLI without subcommands: it always fits, optionally resuming with ``--resume``."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--num_threads",
            type=Optional[int],
            default=None,
            help="torch intra-op threads per training process (default: torch's choice, one per core); "
            "1 is often fastest on a small CPU shared with data loader workers",
        )
        parser.add_argument(
            "--resume",
            default=None,
            help="checkpoint to resume from: a .ckpt path, or 'last' for the newest checkpoint of this run",
        )
        model_class = self.model_class
        if hasattr(model_class, "add_cli_links"):
            model_class.add_cli_links(parser)


def _load(path: str):
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def run_training(module_path: str, data_path: str, args: list[str]) -> int:
    # Lightning warns that checkpoints of manually optimised modules hold the weights after the
    # optimizer step; that is what resuming needs, so the warning is noise here.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    # sys.argv keeps the whole `larp train ...` command, because DDP's launcher starts the other
    # processes from it, while the parser gets only the arguments after the model name.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # Without validation data the datamodules return an empty list, Lightning's way to skip it.
    warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
    configure_training_logs()
    try:
        cli = LarpCLI(
            _load(module_path),
            _load(data_path),
            args=args,
            run=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "larp train", "allow_abbrev": False},
        )
    except (ValueError, MisconfigurationException) as error:
        # These errors come from the constructors' checks of config values (e.g. strategy=fsdp
        # without a GPU). `larp -v` logs the traceback, for the case that one is a bug instead.
        logger.debug("building the training run failed", exc_info=True)
        hint = ""
        if "fsdp" in str(error).lower():
            hint = (
                "; LARP models shard with FSDP2 through lightning.pytorch.strategies.ModelParallelStrategy, "
                "which also runs on CPUs (see REPRODUCE.md)"
            )
        raise UsageError(f"invalid training configuration: {error}{hint}") from error
    check_model_parallel_sizes(cli.trainer)
    check_checkpoint_folders(cli.trainer)
    if cli.config.get("resume"):
        # A resumed run writes into its own checkpoint folder, which is expected to contain files.
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    if cli.config.get("num_threads"):
        torch.set_num_threads(cli.config["num_threads"])
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("resume"))
    except MisconfigurationException as error:
        # Raised when fit starts, before any step: Trainer options that the module cannot use.
        logger.debug("training could not start", exc_info=True)
        raise UsageError(f"invalid training configuration: {error}{_manual_optimization_hint(error)}") from error
    return 0


def _manual_optimization_hint(error: Exception) -> str:
    # The tokenizer module steps its optimizers itself, so Lightning's automatic options fail.
    message = str(error)
    if "gradient_clip" in message:
        return "; the tokenizer clips gradients itself: set model.gradient_clip_norm instead"
    if "accumulate_grad_batches" in message:
        return "; the tokenizer has no gradient accumulation: raise data.batch_size or the number of processes instead"
    return ""


class _RankZeroInfo(logging.Filter):
    """Pass warnings and errors of every process, and lower levels of global rank 0 only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or getattr(rank_zero_only, "rank", 0) == 0


class _NoLitLoggerTip(logging.Filter):
    """Drop Lightning's tip that advertises its hosted LitLogger service."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "[litlogger]" not in record.getMessage()


def configure_training_logs() -> None:
    """Route Lightning's messages through the handler that ``larp`` set up, once each.

    Importing ``lightning`` adds a console handler ("INFO: ...") to its logger, which also
    passes each message on to the root logger, so without this every line prints twice. Where
    the root logger has a handler, Lightning's own is removed, and ``larp -q`` hides its INFO
    lines. Lightning's LitLogger tip is dropped.

    With several processes, only global rank 0 prints INFO lines, while every rank prints its
    warnings (a skipped video, for example).
    """
    root = logging.getLogger()
    if not root.handlers:
        return
    package = logging.getLogger("lightning")
    for handler in list(package.handlers):
        if type(handler) is logging.StreamHandler:
            package.removeHandler(handler)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(existing, _NoLitLoggerTip) for existing in rank_zero_logger.filters):
        rank_zero_logger.addFilter(_NoLitLoggerTip())
    for handler in root.handlers:
        # basicConfig's console handler only, not handlers that capture logs, such as pytest's.
        if type(handler) is not logging.StreamHandler:
            continue
        if not any(isinstance(existing, _RankZeroInfo) for existing in handler.filters):
            handler.addFilter(_RankZeroInfo())


def check_checkpoint_folders(trainer) -> None:
    """Raise ``UsageError`` when a checkpoint folder cannot be created or written.

    Lightning would otherwise fail at the first checkpoint, after the first steps have run.
    """
    for callback in trainer.checkpoint_callbacks:
        folder = callback.dirpath or trainer.default_root_dir
        if folder is None or "://" in str(folder):
            continue
        try:
            os.makedirs(folder, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise UsageError(
                f"cannot write checkpoints to {folder}: {error.strerror or error}; set another "
                "ModelCheckpoint dirpath (or trainer.default_root_dir) or make the folder writable"
            ) from error


def check_model_parallel_sizes(trainer) -> None:
    """Raise ``UsageError`` when ModelParallelStrategy's sizes do not multiply to the world size.

    Lightning checks this only after the processes start, and then every process prints a
    traceback.
    """
    from lightning.pytorch.strategies import ModelParallelStrategy

    strategy = trainer.strategy
    if not isinstance(strategy, ModelParallelStrategy):
        return
    world_size = trainer.num_devices * trainer.num_nodes
    data_parallel = strategy._data_parallel_size
    tensor_parallel = strategy._tensor_parallel_size
    if data_parallel == "auto" or tensor_parallel == "auto":
        return
    if data_parallel * tensor_parallel != world_size:
        raise UsageError(
            f"invalid training configuration: data_parallel_size={data_parallel} x tensor_parallel_size="
            f"{tensor_parallel} must equal devices x num_nodes = {world_size}; set data_parallel_size={world_size} "
            "and tensor_parallel_size=1"
        )
