"""FSDP2 sharding of the tokenizer, discriminator and generator for Lightning's ``ModelParallelStrategy``.

Lightning's ``FSDPStrategy`` wraps models in the first FSDP API, which runs only on GPUs.
``ModelParallelStrategy`` instead hands the LightningModule a device mesh in
``configure_model``, and the module shards itself with ``fully_shard`` (FSDP2). FSDP2 also runs
on CPU processes (gloo), which is how the tests check it.

Each transformer block becomes its own shard unit, so whole weights exist for only a few blocks
at a time in forward and backward. The remaining weights of each model (patch embedding, queries,
codebook, output head, token embeddings) form its root unit.
"""

from __future__ import annotations

import logging

from torch import nn

from larp_video.config import ConfigError

logger = logging.getLogger(__name__)

# Methods other than forward that training and validation call on the sharded tokenizer. FSDP2
# gathers the root unit's weights only around registered methods.
TOKENIZER_METHODS = ("encode", "decode_codes")


def is_sharded(module: nn.Module) -> bool:
    """Return True when ``fully_shard`` has been applied to ``module``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def shard_blocks_and_root(model: nn.Module, mesh, *, methods: tuple[str, ...] = ()) -> int:
    """Apply ``fully_shard`` to every transformer block of ``model`` and then to ``model``.

    A block is any child list named ``blocks``. ``methods`` are the model's methods besides
    ``forward`` that run with its root weights gathered. Returns the number of shard units.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    units = 0
    for name, child in model.named_modules():
        if name.endswith("blocks") and isinstance(child, nn.ModuleList):
            for block in child:
                fully_shard(block, mesh=mesh)
                units += 1
    fully_shard(model, mesh=mesh)
    for method in methods:
        register_fsdp_forward_method(model, method)
    return units + 1


def shard_models(device_mesh, models: list[tuple[nn.Module, tuple[str, ...]]]) -> int:
    """Shard each (model, methods) pair over the data-parallel dimension of ``device_mesh``.

    Returns the number of shard units, or 0 without a mesh (any strategy but
    ``ModelParallelStrategy``) or when the first model is already sharded.
    """
    if device_mesh is None or is_sharded(models[0][0]):
        return 0
    mesh = data_parallel_mesh(device_mesh)
    names = ", ".join(type(model).__name__ for model, _ in models)
    units = sum(shard_blocks_and_root(model, mesh, methods=methods) for model, methods in models)
    logger.info("sharded %s over %d processes in %d FSDP units", names, mesh.size(), units)
    return units


def data_parallel_mesh(device_mesh):
    """Return the data-parallel dimension of ``ModelParallelStrategy``'s mesh.

    Raises ``ConfigError`` when the mesh also has tensor parallelism, which these models do not
    implement.
    """
    tensor_parallel = device_mesh["tensor_parallel"].size()
    if tensor_parallel != 1:
        raise ConfigError(
            f"tensor_parallel_size={tensor_parallel} is not supported: LARP models shard with FSDP only; "
            "set trainer.strategy.init_args.tensor_parallel_size=1 and data_parallel_size to the number of processes"
        )
    return device_mesh["data_parallel"]


def check_strategy(strategy, model_name: str) -> bool:
    """Raise ``ConfigError`` for FSDP settings that these models do not support.

    Rejects Lightning's ``FSDPStrategy`` and sharded checkpoint folders: ``larp convert``,
    ``larp sample`` and the evaluation commands read single ``.ckpt`` files with whole weights.
    Returns True when the strategy shards the weights (``ModelParallelStrategy``).
    """
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    if isinstance(strategy, FSDPStrategy):
        raise ConfigError(
            f"the {model_name} shards with FSDP2, not with FSDPStrategy; set trainer.strategy to "
            "lightning.pytorch.strategies.ModelParallelStrategy with tensor_parallel_size=1 (see REPRODUCE.md)"
        )
    if not isinstance(strategy, ModelParallelStrategy):
        return False
    if strategy._save_distributed_checkpoint:
        raise ConfigError(
            "save_distributed_checkpoint=true writes each checkpoint as a folder of shards, which larp convert, "
            "larp sample and the evaluation commands cannot read; set "
            "trainer.strategy.init_args.save_distributed_checkpoint=false"
        )
    return True
