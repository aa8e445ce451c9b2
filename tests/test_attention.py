"""The blocked CPU attention used for bf16 inference equals scaled_dot_product_attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from larp_video.models.layers import BLOCKED_ATTENTION_MIN_LENGTH, Attention, blocked_attention


def test_blocked_attention_matches_sdpa_fp32():
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 70, 16, generator=generator)
    k = torch.randn(2, 3, 90, 16, generator=generator)
    v = torch.randn(2, 3, 90, 16, generator=generator)

    # 70 queries in blocks of 32: two full blocks and a partial one.
    blocked = blocked_attention(q, k, v, block=32)

    torch.testing.assert_close(blocked, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_bf16_inference_attention_matches_fused_kernel():
    torch.manual_seed(0)
    attention = Attention(64, 4).to(torch.bfloat16)
    x = torch.randn(1, BLOCKED_ATTENTION_MIN_LENGTH, 64, dtype=torch.bfloat16)

    with torch.no_grad():
        blocked = attention(x)  # blocked path: bf16, CPU, no grad, long enough
    with torch.enable_grad():
        fused = attention(x).detach()  # fused kernel: grad mode on

    assert not torch.equal(blocked, fused)  # the two paths really differ
    torch.testing.assert_close(blocked.float(), fused.float(), rtol=0.0, atol=2e-2)


def test_blocked_attention_value_width_differs():
    q, k = torch.randn(1, 2, 10, 8), torch.randn(1, 2, 12, 8)
    v = torch.randn(1, 2, 12, 5)

    blocked = blocked_attention(q, k, v, block=4)

    torch.testing.assert_close(blocked, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_blocked_attention_rejects_empty_block():
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="block must be at least 1, got 0"):
        blocked_attention(q, q, q, block=0)


@pytest.mark.parametrize(
    "q_shape, k_shape",
    [((1, 2, 4, 8), (2, 2, 4, 8)), ((2, 1, 4, 8), (2, 2, 4, 8)), ((1, 2, 4, 8), (1, 2, 4, 6)), ((2, 4, 8), (2, 4, 8))],
)
def test_blocked_attention_rejects_mismatched_shapes(q_shape, k_shape):
    with pytest.raises(ValueError, match="expand broadcast dimensions first"):
        blocked_attention(torch.randn(q_shape), torch.randn(k_shape), torch.randn(k_shape))
