"""Sampling token sequences from a ``LARPGenerator``: logits processors, guidance and decoding.

Dimension legend used in shape comments:
    B  videos sampled      R  rows fed to the model (B, or 2B with classifier-free guidance)
    K  codebook size       P  prefix length              D  width
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import torch
from tqdm.auto import tqdm

from larp_video.models.llama import KVCache

if TYPE_CHECKING:
    from larp_video.models.generator import LARPGenerator

CFG_SCHEDULES = ("constant", "linear", "cosine")

# One generator for the whole batch, or one per row so that each row's draws do not depend on
# the other rows of the batch.
Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def guidance_scale(scale: float, schedule: str, step: int, num_steps: int) -> float:
    """Return the classifier-free guidance scale for token ``step`` (0-based) of ``num_steps``.

    With f = step / (num_steps - 1) (f = 1 when num_steps is 1):
        constant: s
        linear:   1 + (s - 1) * f                      (1 at the first token, s at the last)
        cosine:   1 + (s - 1) * (1 - cos(pi * f)) / 2   (the same end points, flat at both ends)
    """
    if schedule not in CFG_SCHEDULES:
        raise ValueError(f"unknown cfg_schedule {schedule!r}; use one of {CFG_SCHEDULES}")
    if schedule == "constant":
        return scale
    fraction = 1.0 if num_steps == 1 else step / (num_steps - 1)
    if schedule == "linear":
        return 1.0 + (scale - 1.0) * fraction
    return 1.0 + (scale - 1.0) * (1.0 - math.cos(math.pi * fraction)) / 2.0


def apply_guidance(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """Return the guided logits uncond + scale * (cond - uncond).

    The formula is evaluated as cond + (scale - 1) * (cond - uncond), which is the same value but
    returns the conditional logits bit for bit when scale is 1.
    """
    return conditional + (scale - 1.0) * (conditional - unconditional)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest of its row to -inf; k = 0 keeps all.

    Logits tied with the k-th largest are kept, so a row may keep more than k entries.
    """
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < threshold, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the most likely tokens until their probabilities sum to at least ``p``.

    A token is kept when the tokens more likely than it sum to less than ``p``, so the most
    likely token is always kept. The others are set to -inf; p = 1 keeps all.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, K)
    probabilities = sorted_logits.softmax(dim=-1)
    mass_before = probabilities.cumsum(dim=-1) - probabilities  # probability of the more likely tokens
    remove_sorted = mass_before >= p
    remove = torch.empty_like(remove_sorted).scatter_(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: Generators = None,
) -> torch.Tensor:
    """Pick one token id per row of ``logits`` (B, K) and return them as (B,) int64.

    Temperature 0 takes the argmax. Otherwise the logits are divided by the temperature, then
    filtered by top-k and then top-p, and a token is drawn from their softmax in fp32.
    ``generator`` is one ``torch.Generator`` for the batch or a sequence of B generators, one
    per row. With one per row, a row draws the same token whatever batch it is in.
    """
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    probabilities = logits.softmax(dim=-1)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probabilities, num_samples=1, generator=generator).squeeze(-1)

    if len(generator) != probabilities.shape[0]:
        raise ValueError(f"got {len(generator)} generators for {probabilities.shape[0]} rows; pass one per row")
    draws = [
        torch.multinomial(row[None], num_samples=1, generator=row_generator)
        for row, row_generator in zip(probabilities, generator)
    ]
    return torch.cat(draws).squeeze(-1)  # (B,)


# NOTE: torch.no_grad rather than torch.inference_mode, because under inference_mode autocast
# re-casts every fp32 weight on every call (measured with torch 2.13 on CPU), which made bf16
# decoding slower than fp32. Under no_grad autocast keeps its bf16 weight copies for the whole
# autocast region.
@torch.no_grad()
def generate(
    model: LARPGenerator,
    condition: torch.Tensor,
    num_tokens: int | None = None,
    *,
    cfg_scale: float = 1.0,
    cfg_schedule: str = "constant",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: Generators = None,
    use_cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Sample token ids one at a time and return them as (B, num_tokens) int64.

    ``condition`` is what ``LARPGenerator.forward`` takes: (B,) class labels (negative for the
    null class) or, in frame-prediction mode, the (B, N) tokens of the clip with the given first
    frames. ``num_tokens`` defaults to the model's N and may be smaller.

    Classifier-free guidance runs when ``cfg_scale`` is not 1: the conditional and the null-class
    rows go through the model as one batch of 2B rows, and the logits become
    uncond + s * (cond - uncond), with s from ``guidance_scale(cfg_scale, cfg_schedule, ...)``.
    ``temperature`` 0 is greedy decoding; see ``sample_next_token`` for top-k and top-p.
    Draws come from ``generator``, so a fixed seed gives the same tokens. A sequence of B
    generators gives each video its own random stream, independent of the batch it is in.

    With ``use_cache`` the prefix is run once, and each later step feeds one token through a
    preallocated KV cache. Without it every step reruns the whole sequence, which is slow and
    serves as a reference in tests. The
    model is in eval mode while sampling and is restored to its previous mode afterwards. Run it
    under ``torch.autocast`` for bf16; the cache takes the dtype that autocast produces.
    """
    config = model.config
    num_tokens = config.num_tokens if num_tokens is None else num_tokens
    if not 1 <= num_tokens <= config.num_tokens:
        raise ValueError(f"num_tokens must be in [1, {config.num_tokens}], got {num_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {top_p}")
    if cfg_schedule not in CFG_SCHEDULES:
        raise ValueError(f"unknown cfg_schedule {cfg_schedule!r}; use one of {CFG_SCHEDULES}")
    guided = cfg_scale != 1.0
    if guided and config.frame_prediction:
        raise ValueError(f"cfg_scale is {cfg_scale}, but frame-prediction models have no null condition; use 1.0")

    batch = condition.shape[0]
    rows = condition
    if guided:
        rows = torch.cat([condition, model.null_condition(batch, condition.device)])  # (2B,)

    was_training = model.training
    model.eval()
    try:
        return _decode_loop(
            model, rows, batch, num_tokens, guided, cfg_scale, cfg_schedule,
            temperature, top_k, top_p, generator, use_cache, progress,
        )
    finally:
        model.train(was_training)


def _decode_loop(
    model: LARPGenerator,
    rows: torch.Tensor,
    batch: int,
    num_tokens: int,
    guided: bool,
    cfg_scale: float,
    cfg_schedule: str,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: Generators,
    use_cache: bool,
    progress: bool,
) -> torch.Tensor:
    prefix = model.prefix_embeddings(rows)  # (R, P, D)
    prefix_length = prefix.shape[1]
    # The last token is sampled but never fed back, so the cache needs P + n - 1 positions.
    cache = KVCache(len(model.blocks), prefix_length + num_tokens - 1) if use_cache else None
    tokens = torch.empty((batch, num_tokens), dtype=torch.long, device=rows.device)

    for step in tqdm(range(num_tokens), desc="sampling tokens", disable=not progress, leave=False):
        if step == 0:
            inputs, start = prefix, 0
        elif use_cache:
            previous = tokens[:, step - 1 : step]  # (B, 1)
            inputs = model.token_embedding(torch.cat([previous, previous]) if guided else previous)  # (R, 1, D)
            start = prefix_length + step - 1
        else:
            history = tokens[:, :step]  # (B, step)
            history_embeddings = model.token_embedding(torch.cat([history, history]) if guided else history)
            inputs, start = torch.cat([prefix, history_embeddings], dim=1), 0  # (R, P + step, D)

        hidden = model.decode(inputs, start=start, cache=cache)
        logits = model.head(hidden[:, -1]).float()  # (R, K)
        if guided:
            conditional, unconditional = logits.chunk(2)
            scale = guidance_scale(cfg_scale, cfg_schedule, step, num_tokens)
            logits = apply_guidance(conditional, unconditional, scale)  # (B, K)
        tokens[:, step] = sample_next_token(
            logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )
    return tokens
