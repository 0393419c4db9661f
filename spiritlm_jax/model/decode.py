"""Batched autoregressive decoding: prefill, then the whole sampling loop in one jitted while_loop.

Prompts of different lengths are left-padded to a bucketed length (segment id 0 on pads, RoPE
positions counted from each prompt's first real token), so a batch decodes exactly as each prompt
alone would. Sampling knobs (temperature, top-k, top-p, repetition penalty) are traced values and
the logit mask is an array: changing them never recompiles. Only the bucketed prompt length, the
bucketed number of new tokens and the batch size are static.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.buckets import pow2_bucket
from spiritlm_jax.model.llama import Llama, init_cache

NEG_INF = -1e30
PROMPT_BUCKET_MIN = 16  # prompt (and scored sequence) lengths are padded to buckets.pow2_bucket(n, 16)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.0  # 1.0 = off; > 1 discourages tokens already in prompt or output
    max_new_tokens: int = 64

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def check_context_length(
    n_prompt: int, n_new: int, max_seq_len: int, what: str = "prompt", new: str = "new tokens"
) -> None:
    """The one context-length check (decoding, SpiritLM prompts, likelihood scoring, evaluation runs):
    ValueError when `n_prompt` tokens plus `n_new` more do not fit in the model's `max_seq_len`."""
    if n_prompt + n_new > max_seq_len:
        raise ValueError(
            f"{what} of {n_prompt} tokens + {n_new} {new} exceeds the model's context of {max_seq_len} tokens"
        )


def _filter_logits(logits_bv, top_k, top_p):
    """Mask everything outside the top-k and the top-p nucleus (both traced; 0 / 1.0 = off), with
    one sort: in descending order, the kept tokens are a prefix; its last value is the cut-off."""
    v = logits_bv.shape[-1]
    rank_v = jnp.arange(v)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    sorted_bv = jnp.where(rank_v < k, -jnp.sort(-logits_bv, axis=-1), NEG_INF)  # top-k, descending
    probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
    # keep the smallest prefix whose mass reaches top_p (the first token always stays; top_p = 1 keeps
    # all: the fp32 cumulative sum can reach 1 before the last tokens)
    keep_bv = (((jnp.cumsum(probs_bv, axis=-1) - probs_bv) < top_p) | (top_p >= 1.0)) & (rank_v < k)
    cutoff_b1 = jnp.min(jnp.where(keep_bv, sorted_bv, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits_bv < cutoff_b1, NEG_INF, logits_bv)


def _next_token(logits_bv, seen_bv, rng, params):
    """Apply mask, repetition penalty, then greedy or temperature/top-k/top-p sampling. The sampling
    branch (a sort over the vocabulary) only runs when sampling (lax.cond on the traced flags)."""
    logits_bv = logits_bv + params["mask_v"]
    pen = params["repetition_penalty"]
    penalised = jnp.where(logits_bv > 0, logits_bv / pen, logits_bv * pen)
    logits_bv = jnp.where(seen_bv, penalised, logits_bv)

    def sample(logits_bv):
        temp = jnp.maximum(params["temperature"], 1e-6)
        filtered = _filter_logits(logits_bv / temp, params["top_k"], params["top_p"])
        return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)

    def greedy(logits_bv):
        return jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)

    use_greedy = jnp.logical_or(~params["do_sample"], params["temperature"] == 0)
    return jax.lax.cond(use_greedy, greedy, sample, logits_bv)


@functools.partial(jax.jit, static_argnames=("model", "max_new"))
def _prefill(model: Llama, params, tokens_bp, pad_b, max_new: int):
    """Run the left-padded prompts through the model into a fresh cache of `p + max_new` slots;
    returns the last position's logits [B, V] (the only ones sampling needs) and the cache."""
    b, p = tokens_bp.shape
    seg_bp = (jnp.arange(p)[None] >= pad_b[:, None]).astype(jnp.int32)
    pos_bp = jnp.maximum(jnp.arange(p)[None] - pad_b[:, None], 0)
    cache = init_cache(model.cfg, b, p + max_new)
    logits_b1v, cache = model.apply({"params": params}, tokens_bp, pos_bp, seg_bp, cache=cache, last_only=True)
    return logits_b1v[:, 0], cache


@functools.partial(jax.jit, static_argnames=("model", "max_new"), donate_argnames=("cache",))
def _decode(model: Llama, params, cache, logits_bv, tokens_bp, pad_b, rng, sparams, eos_ids, max_new: int):
    """The sampling loop over a prefilled cache. The cache is donated and returned, so the while
    loop writes one slot per layer per step into the caller's buffer (no copy of the cache)."""
    b, p = tokens_bp.shape
    v = model.cfg.vocab_size
    seg_bp = (jnp.arange(p)[None] >= pad_b[:, None]).astype(jnp.int32)
    seen_bv = jnp.zeros((b, v), bool).at[jnp.arange(b)[:, None], tokens_bp].max(seg_bp.astype(bool))
    rng, sub = jax.random.split(rng)
    first_b = _next_token(logits_bv, seen_bv, sub, sparams)
    out_bn = jnp.zeros((b, max_new), jnp.int32).at[:, 0].set(first_b)
    done_b = jnp.isin(first_b, eos_ids)
    prompt_len_b = p - pad_b
    ones_b1 = jnp.ones((b, 1), jnp.int32)

    def cond(carry):
        i, _, _, _, done_b, _, _ = carry
        return jnp.logical_and(i < sparams["max_new_tokens"], ~jnp.all(done_b))

    def body(carry):
        i, tok_b, cache, out_bn, done_b, seen_bv, rng = carry
        seen_bv = seen_bv.at[jnp.arange(b), tok_b].set(True)
        pos_b1 = (prompt_len_b + i - 1)[:, None]
        logits_b1v, cache = model.apply({"params": params}, tok_b[:, None], pos_b1, ones_b1, cache=cache)
        rng, sub = jax.random.split(rng)
        nxt_b = _next_token(logits_b1v[:, 0], seen_bv, sub, sparams)
        nxt_b = jnp.where(done_b, 0, nxt_b)
        out_bn = out_bn.at[:, i].set(nxt_b)
        done_b = done_b | jnp.isin(nxt_b, eos_ids)
        return i + 1, nxt_b, cache, out_bn, done_b, seen_bv, rng

    init = (jnp.ones((), jnp.int32), first_b, cache, out_bn, done_b, seen_bv, rng)
    n, _, cache, out_bn, _, _, _ = jax.lax.while_loop(cond, body, init)
    return out_bn, n, cache


def decode_compiled(model: Llama, params, batch: int, prompt_len: int, max_new: int):
    """The two compiled programs of one bucket (prefill, sampling loop), lowered from shapes only:
    for memory analysis (`.memory_analysis()`) and HLO inspection without running anything."""
    tokens = jax.ShapeDtypeStruct((batch, prompt_len), jnp.int32)
    pad = jax.ShapeDtypeStruct((batch,), jnp.int32)
    prefill = _prefill.lower(model, params, tokens, pad, max_new).compile()
    logits, cache = jax.eval_shape(lambda p, t, d: _prefill(model, p, t, d, max_new), params, tokens, pad)
    sparams = jax.eval_shape(lambda: _sampling_params(SamplingConfig(), model.cfg.vocab_size, None))
    loop = _decode.lower(
        model,
        params,
        cache,
        logits,
        tokens,
        pad,
        jax.random.PRNGKey(0),
        sparams,
        jax.ShapeDtypeStruct((1,), jnp.int32),
        max_new,
    ).compile()
    return prefill, loop


def _sampling_params(sampling: SamplingConfig, v: int, logit_mask) -> dict:
    """Sampling knobs as traced values (changing them never recompiles); the logit mask as an array."""
    mask = np.ones(v, bool) if logit_mask is None else np.asarray(logit_mask, bool)
    if mask.shape != (v,):
        raise ValueError(f"logit_mask must have shape ({v},), got {mask.shape}")
    if not mask.any():
        raise ValueError("logit_mask bans every token")
    return {
        "mask_v": jnp.where(jnp.asarray(mask), 0.0, NEG_INF).astype(jnp.float32),
        "temperature": jnp.float32(sampling.temperature),
        "top_k": jnp.int32(sampling.top_k),
        "top_p": jnp.float32(sampling.top_p),
        "repetition_penalty": jnp.float32(sampling.repetition_penalty),
        "do_sample": jnp.bool_(sampling.do_sample),
        "max_new_tokens": jnp.int32(sampling.max_new_tokens),
    }


def generate_tokens(
    model: Llama,
    params,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingConfig = SamplingConfig(),
    *,
    eos_ids: Sequence[int] = (),
    logit_mask: Optional[np.ndarray] = None,
    seed: int = 0,
) -> list[list[int]]:
    """Continue each prompt; returns the new tokens per prompt, cut after the first EOS (kept).

    `logit_mask`: bool [V], True where a token may be generated (modality forcing).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    v = model.cfg.vocab_size
    longest = max(len(p) for p in prompts)
    p_len = pow2_bucket(longest, PROMPT_BUCKET_MIN)
    n_new = pow2_bucket(sampling.max_new_tokens, 8)
    check_context_length(longest, sampling.max_new_tokens, model.cfg.max_seq_len)
    for i, p in enumerate(prompts):
        bad = [t for t in p if not 0 <= t < v]
        if bad:
            raise ValueError(f"prompt {i} has token ids outside the vocabulary [0, {v}): {bad[:5]}")
    tokens = np.zeros((len(prompts), p_len), np.int32)
    pad = np.zeros(len(prompts), np.int32)
    for i, p in enumerate(prompts):
        pad[i] = p_len - len(p)
        tokens[i, pad[i] :] = p
    sparams = _sampling_params(sampling, v, logit_mask)
    eos = jnp.asarray(list(eos_ids) or [-1], jnp.int32)
    tokens_bp, pad_b = jnp.asarray(tokens), jnp.asarray(pad)
    logits_bv, cache = _prefill(model, params, tokens_bp, pad_b, n_new)
    out, n, _ = _decode(
        model, params, cache, logits_bv, tokens_bp, pad_b, jax.random.PRNGKey(seed), sparams, eos, n_new
    )
    out = np.asarray(out)[:, : int(n)]
    eos_set = set(eos_ids)
    results = []
    for row in out:
        cut = []
        for t in row.tolist():
            cut.append(t)
            if t in eos_set:
                break
        results.append(cut)
    return results
