"""LLaMA-style causal transformer blocks with an optional key-value cache.

The blocks are pre-norm (RMSNorm), have no biases, use a SwiGLU feed-forward network and
attend through ``scaled_dot_product_attention``. Parameter names follow the common LLaMA
naming (``attention.qkv``, ``attention.proj``, ``ffn.gate_proj``, ``ffn.up_proj``,
``ffn.down_proj``).

Dimension legend used in shape comments:
    B  batch            L  positions fed in this call     S  cached plus new positions
    D  width            H  heads                          Dh head width (D / H)
    F  SwiGLU hidden width
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> int:
    """Return the SwiGLU hidden width the way LLaMA and the reference implementation compute it.

    Start from int(2/3 * 4 * dim), scale by ``ffn_dim_multiplier`` (truncating) when given, and
    round up to a multiple of ``multiple_of``. For dim 1280 and multiple_of 256 this is 3584.
    """
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


class LayerKVCache:
    """Preallocated keys and values of one attention layer.

    The buffers are allocated on the first ``update`` with the dtype and device of the keys it
    receives (bf16 under autocast), so the caller does not need to know them in advance.
    """

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.keys: torch.Tensor | None = None  # (B, H, max_length, Dh)
        self.values: torch.Tensor | None = None  # (B, H, max_length, Dh)

    def update(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``keys``/``values`` (B, H, L, Dh) at positions start .. start+L-1.

        Returns views of all keys and values of positions 0 .. start+L-1, shape (B, H, S, Dh).
        The views share memory with the cache, so nothing is copied or concatenated per step.
        """
        end = start + keys.shape[2]
        if end > self.max_length:
            raise ValueError(
                f"KV cache overflow: positions up to {end} requested but the cache has {self.max_length}; "
                "create the cache with a larger max_length"
            )
        if self.keys is None:
            batch, heads, _, head_dim = keys.shape
            shape = (batch, heads, self.max_length, head_dim)
            self.keys = torch.empty(shape, dtype=keys.dtype, device=keys.device)
            self.values = torch.empty(shape, dtype=values.dtype, device=values.device)
        self.keys[:, :, start:end] = keys
        self.values[:, :, start:end] = values
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """Key-value caches of all layers of a decoder, for incremental (one token per step) decoding."""

    def __init__(self, num_layers: int, max_length: int):
        self.max_length = max_length
        self.layers = [LayerKVCache(max_length) for _ in range(num_layers)]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) in the rotate-half convention of GPT-NeoX.

    Channel i of the first half of a head is rotated together with channel i of the second
    half by the angle p * base ** (-2i / Dh) for position p. The tables are fixed buffers that
    are not saved in checkpoints.
    """

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"RoPE needs an even head width, got {head_dim}")
        frequencies = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (Dh/2,)
        angles = torch.arange(max_positions, dtype=torch.float64)[:, None] * frequencies  # (P, Dh/2)
        self.register_buffer("cos", angles.cos().to(torch.float32), persistent=False)
        self.register_buffer("sin", angles.sin().to(torch.float32), persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate ``x`` (B, H, L, Dh) as positions start .. start+L-1, computed in fp32."""
        length = x.shape[2]
        cos = self.cos[start : start + length]  # (L, Dh/2)
        sin = self.sin[start : start + length]
        first, second = x.float().chunk(2, dim=-1)  # each (B, H, L, Dh/2)
        rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
        return rotated.to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention without biases, with an optional KV cache."""

    def __init__(self, dim: int, num_heads: int, attention_dropout: float = 0.0, residual_dropout: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)  # output rows: all queries, all keys, all values
        self.proj = nn.Linear(dim, dim, bias=False)
        self.residual_dropout = nn.Dropout(residual_dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        start: int = 0,
        cache: LayerKVCache | None = None,
        rotary: RotaryEmbedding | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` (B, L, D), the inputs at positions start .. start+L-1.

        Without a cache, ``x`` must be the whole sequence so far (``start`` then only shifts
        RoPE). With a cache, earlier positions come from the cache and ``x`` contains only new ones.
        """
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
        if rotary is not None:
            queries = rotary(queries, start)
            keys = rotary(keys, start)

        mask = None
        is_causal = True
        if cache is not None:
            keys, values = cache.update(keys, values, start)  # each (B, H, S, Dh)
            if length == 1:
                is_causal = False  # one query attends to every cached position
            elif start > 0:
                # Queries at start.. see keys up to their own position; is_causal would align
                # the mask to the top-left corner, which is wrong when S > L.
                query_positions = torch.arange(start, start + length, device=x.device)
                mask = query_positions[:, None] >= torch.arange(start + length, device=x.device)[None, :]
                is_causal = False

        dropout = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=mask, is_causal=is_causal, dropout_p=dropout
        )  # (B, H, L, Dh)
        out = out.transpose(1, 2).reshape(batch, length, dim)  # (B, L, D)
        return self.residual_dropout(self.proj(out))


class SwiGLU(nn.Module):
    """Feed-forward network down_proj(silu(gate_proj(x)) * up_proj(x)) followed by dropout."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.gate_proj(x)) * self.up_proj(x)  # (B, L, F)
        return self.dropout(self.down_proj(hidden))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``rate`` and rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


class DecoderBlock(nn.Module):
    """Pre-norm block: h = x + attention(norm(x)), then h + ffn(norm(h)), with optional drop path."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_hidden_dim: int,
        *,
        norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.attention_norm = nn.RMSNorm(dim, eps=norm_eps)
        self.attention = CausalSelfAttention(dim, num_heads, attention_dropout, residual_dropout)
        self.ffn_norm = nn.RMSNorm(dim, eps=norm_eps)
        self.ffn = SwiGLU(dim, ffn_hidden_dim, ffn_dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        start: int = 0,
        cache: LayerKVCache | None = None,
        rotary: RotaryEmbedding | None = None,
    ) -> torch.Tensor:
        attended = self.attention(self.attention_norm(x), start=start, cache=cache, rotary=rotary)
        x = x + drop_path(attended, self.drop_path_rate, self.training)
        return x + drop_path(self.ffn(self.ffn_norm(x)), self.drop_path_rate, self.training)
