"""Transformer building blocks and fixed sin-cos position tables shared by the models.

Dimension legend used in shape comments:
    B  batch          L  sequence length   D  width
    H  heads          Dh head width (D / H)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------------
# Fixed sin-cos position tables. They are computed in float64 and returned as float32, which
# reproduces the tables stored in the released checkpoints.
# ---------------------------------------------------------------------------------------------


def sincos_1d(dim: int, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Return the (len(positions), dim) table [sin(p * w_i) ..., cos(p * w_i) ...].

    The frequencies are w_i = base ** (-i / (dim / 2)) for i < dim / 2. All sines come first,
    then all cosines.
    """
    return _sincos_1d_float64(dim, positions, base).to(torch.float32)


def _sincos_1d_float64(dim: int, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    if dim % 2 != 0:
        raise ValueError(f"sin-cos tables need an even width, got {dim}")
    exponents = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    frequencies = 1.0 / (base**exponents)  # (dim/2,)
    angles = positions.to(torch.float64).reshape(-1, 1) * frequencies  # (P, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(dim: int, grid_size: int) -> torch.Tensor:
    """Return the (grid_size**2, dim) table of a square grid, rows in row-major order.

    The first dim/2 channels encode the column index and the last dim/2 the row index, the
    convention of MAE's position tables.
    """
    return _sincos_2d_float64(dim, grid_size).to(torch.float32)


def _sincos_2d_float64(dim: int, grid_size: int) -> torch.Tensor:
    if dim % 2 != 0:
        raise ValueError(f"2D sin-cos tables need an even width, got {dim}")
    index = torch.arange(grid_size, dtype=torch.float64)
    rows = index.repeat_interleave(grid_size)  # (g*g,) row of each cell
    columns = index.repeat(grid_size)  # (g*g,) column of each cell
    return torch.cat([_sincos_1d_float64(dim // 2, columns), _sincos_1d_float64(dim // 2, rows)], dim=1)


def sincos_3d(dim: int, grid_size: int, num_frames: int) -> torch.Tensor:
    """Return the (num_frames * grid_size**2, dim) table in (t, row, column) order.

    Each entry is the 2D table of its cell plus the full-width 1D table of its time index.
    """
    spatial = _sincos_2d_float64(dim, grid_size).reshape(1, grid_size * grid_size, dim)
    temporal = _sincos_1d_float64(dim, torch.arange(num_frames)).reshape(num_frames, 1, dim)
    return (spatial + temporal).reshape(num_frames * grid_size * grid_size, dim).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# Pre-norm ViT block. Parameter names follow timm's ``Block`` (norm1, attn.qkv, attn.proj,
# norm2, mlp.fc1, mlp.fc2), which the released checkpoints use.
# ---------------------------------------------------------------------------------------------


# Query block of ``blocked_attention``. On a 2-core AMD EPYC (Zen 4) in bf16, 12 heads x 2048
# tokens x 64 took 57 ms per call with it and 86 ms with the fused CPU kernel. Blocks of 128 and
# of 2048 queries took 74 and 77 ms.
ATTENTION_QUERY_BLOCK = 512

# Shortest key sequence for which inference in bf16 on a CPU uses ``blocked_attention``.
BLOCKED_ATTENTION_MIN_LENGTH = 1024


def blocked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int = ATTENTION_QUERY_BLOCK
) -> torch.Tensor:
    """Return softmax(q k^T / sqrt(Dh)) v, one head and ``block`` queries at a time.

    q: (B, H, Lq, Dh), k: (B, H, L, Dh), v: (B, H, L, Dv), with equal B and H (no broadcasting).
    Equal to non-causal ``scaled_dot_product_attention`` up to rounding. Each block's (block, L)
    score matrix is small (2 MB for 512 x 2048 in bf16). On the CPU named at
    ``ATTENTION_QUERY_BLOCK`` this ran faster than the fused kernel for long sequences.
    """
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    shapes_match = (
        q.dim() == k.dim() == v.dim() == 4
        and q.shape[:2] == k.shape[:2] == v.shape[:2]  # B, H
        and k.shape[2] == v.shape[2]  # L
        and q.shape[3] == k.shape[3]  # Dh
    )
    if not shapes_match:
        raise ValueError(
            f"blocked_attention needs q (B, H, Lq, Dh), k (B, H, L, Dh) and v (B, H, L, Dv) with "
            f"equal B, H, L and Dh, got {tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}; "
            "expand broadcast dimensions first"
        )
    out = q.new_empty(*q.shape[:-1], v.shape[-1])  # (B, H, Lq, Dv)
    keys = (k * q.shape[-1] ** -0.5).transpose(-1, -2)  # (B, H, Dh, L), scale folded in
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for start in range(0, q.shape[2], block):
                scores = q[b, h, start : start + block] @ keys[b, h]  # (block, L)
                out[b, h, start : start + block] = torch.softmax(scores, dim=-1) @ v[b, h]
    return out


def _use_blocked_attention(q: torch.Tensor, k: torch.Tensor) -> bool:
    return (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and k.shape[2] >= BLOCKED_ATTENTION_MIN_LENGTH
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    )


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``.

    Inference in bf16 on a CPU over at least ``BLOCKED_ATTENTION_MIN_LENGTH`` tokens runs
    ``blocked_attention`` instead, which computes the same values faster there.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, causal: bool = False):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, query_positions: slice | None = None) -> torch.Tensor:
        """Attend over all of ``x``; with ``query_positions`` only those positions are returned
        (and only their queries are computed)."""
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        if query_positions is None:
            qkv = self.qkv(x).reshape(batch, length, 3, heads, head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
        else:
            weight, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, query_positions], weight[:dim], None if bias is None else bias[:dim])
            q = q.reshape(batch, -1, heads, head_dim).transpose(1, 2)  # (B, H, Lq, Dh)
            kv = F.linear(x, weight[dim:], None if bias is None else bias[dim:])
            k, v = kv.reshape(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        causal = self.causal and query_positions is None
        if not causal and _use_blocked_attention(q, k):
            out = blocked_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out = out.transpose(1, 2).reshape(batch, q.shape[2], dim)  # (B, Lq, D)
        return self.proj(out)


class Mlp(nn.Module):
    """Two-layer MLP with exact (erf) GELU."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    No dropout, drop-path or layer scale. LayerNorm eps is 1e-6, the default of timm's
    ``LayerNorm`` that the reference blocks use; the reference test vectors confirm it (with
    1e-5 the encoder output of the tiny reference checkpoint is off by 1.7e-2).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, keep: slice | None = None) -> torch.Tensor:
        """Return the block's output, or only the positions ``keep`` of it.

        With ``keep`` every position still serves as a key and value, but queries, the MLP and
        the residual stream are computed for the kept positions alone; the result equals
        ``forward(x)[:, keep]``.
        """
        if keep is None:
            x = x + self.attn(self.norm1(x))
        else:
            if self.attn.causal:
                raise ValueError("keep is not supported for causal attention")
            x = x[:, keep] + self.attn(self.norm1(x), query_positions=keep)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of ``Block``s, named ``blocks.0`` ... ``blocks.{depth-1}``."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))

    def forward(self, x: torch.Tensor, keep: slice | None = None) -> torch.Tensor:
        """Run the blocks; ``keep`` returns only those positions and skips the work of the last
        block for the others (the result equals ``forward(x)[:, keep]``)."""
        if len(self.blocks) == 0:
            return x if keep is None else x[:, keep]
        for block in self.blocks[:-1]:
            x = block(x)
        return self.blocks[-1](x, keep)


def xavier_init_linears(module: nn.Module) -> None:
    """Initialise every ``nn.Linear`` below ``module`` Xavier-uniform with zero bias."""
    for submodule in module.modules():
        if isinstance(submodule, nn.Linear):
            nn.init.xavier_uniform_(submodule.weight)
            if submodule.bias is not None:
                nn.init.zeros_(submodule.bias)
