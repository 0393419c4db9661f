"""Decoding: greedy == step-by-step argmax of the full forward pass; seeded sampling reproducible;
no recompilation within a length bucket; masks and EOS honoured. fp32, exact token equality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiritlm_jax.buckets import pow2_bucket
from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.decode import (
    PROMPT_BUCKET_MIN,
    SamplingConfig,
    _decode,
    _prefill,
    decode_compiled,
    generate_tokens,
)
from spiritlm_jax.model.llama import Llama, init_params

CFG = LlamaConfig(
    vocab_size=61, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96, dtype="float32", max_seq_len=128
)


@pytest.fixture(scope="module")
def mp():
    params = init_params(CFG, jax.random.PRNGKey(0))
    # sharpen the output distribution so greedy choices are well separated
    params["lm_head"]["kernel"] = params["lm_head"]["kernel"] * 30
    return Llama(CFG), params


_FULL = {}


def _full_forward(model, params, seq, width=32):
    """Logits of the last token of `seq` from one full (uncached) forward pass; right padding to a
    fixed width cannot change earlier positions under the causal mask, so one compilation serves all."""
    if model not in _FULL:
        _FULL[model] = jax.jit(lambda p, t: model.apply({"params": p}, t))
    padded = np.zeros((1, width), np.int32)
    padded[0, : len(seq)] = seq
    return np.asarray(_FULL[model](params, jnp.asarray(padded)))[0, len(seq) - 1]


def _reference_greedy(model, params, prompt, n, mask=None):
    seq = list(prompt)
    for _ in range(n):
        logits = _full_forward(model, params, seq)
        if mask is not None:
            logits = np.where(mask, logits, -np.inf)
        seq.append(int(np.argmax(logits)))
    return seq[len(prompt) :]


def test_greedy_equals_full_forward_argmax_batched(mp):
    model, params = mp
    prompts = [[1, 2, 3], [5, 8, 13, 21, 34, 4, 7], [9]]
    greedy = SamplingConfig(do_sample=False, max_new_tokens=10)
    out = generate_tokens(model, params, prompts, greedy)
    for p, o in zip(prompts, out):
        assert o == _reference_greedy(model, params, p, 10)


def test_logit_mask_and_eos(mp):
    model, params = mp
    mask = np.zeros(CFG.vocab_size, bool)
    mask[10:20] = True
    out = generate_tokens(
        model, params, [[1, 2, 3]], SamplingConfig(do_sample=False, max_new_tokens=6), logit_mask=mask
    )[0]
    assert out == _reference_greedy(model, params, [1, 2, 3], 6, mask)
    assert all(10 <= t < 20 for t in out)
    eos = out[2]
    stopped = generate_tokens(
        model, params, [[1, 2, 3]], SamplingConfig(do_sample=False, max_new_tokens=6), logit_mask=mask, eos_ids=[eos]
    )[0]
    assert stopped == out[: out.index(eos) + 1]


def test_seeded_sampling_is_reproducible(mp):
    model, params = mp
    cfg = SamplingConfig(temperature=1.5, top_p=0.95, top_k=20, max_new_tokens=12)
    a = generate_tokens(model, params, [[1, 2], [3, 4, 5]], cfg, seed=7)
    b = generate_tokens(model, params, [[1, 2], [3, 4, 5]], cfg, seed=7)
    c = generate_tokens(model, params, [[1, 2], [3, 4, 5]], cfg, seed=8)
    assert a == b and a != c
    top1 = generate_tokens(model, params, [[1, 2]], SamplingConfig(top_k=1, max_new_tokens=8), seed=3)
    assert top1 == generate_tokens(model, params, [[1, 2]], SamplingConfig(do_sample=False, max_new_tokens=8))


def test_no_recompilation_within_a_bucket(mp):
    model, params = mp
    cfg = SamplingConfig(do_sample=False, max_new_tokens=5)
    generate_tokens(model, params, [[1, 2, 3]], cfg)
    sizes = _decode._cache_size(), _prefill._cache_size()
    for prompt in ([4, 5], [1] * 9, [2] * 16):  # all within the 16-token bucket
        generate_tokens(model, params, [prompt], SamplingConfig(do_sample=True, temperature=0.7, max_new_tokens=7))
    assert (_decode._cache_size(), _prefill._cache_size()) == sizes
    assert pow2_bucket(17, PROMPT_BUCKET_MIN) == 32


def test_decode_loop_writes_the_cache_in_place(mp):
    """The compiled sampling loop takes the cache donated and returns it aliased (no copy of it), and
    its temporaries stay under a quarter of the K+V cache (XLA memory analysis; before the in-place
    write the loop held about 2.6x the cache in temporaries)."""
    model, params = mp
    batch, prompt, new = 16, 64, 192
    _, loop = decode_compiled(model, params, batch, prompt, new)
    m = loop.memory_analysis()
    kv = 2 * CFG.n_layers * batch * (prompt + new) * CFG.n_kv_heads * CFG.dim_per_head * 4
    assert m.alias_size_in_bytes >= kv
    assert m.temp_size_in_bytes <= 0.25 * kv, (m.temp_size_in_bytes, kv)


def test_errors(mp):
    model, params = mp
    with pytest.raises(ValueError, match="at least one token"):
        generate_tokens(model, params, [[]])
    with pytest.raises(ValueError, match="exceeds the model's context"):
        generate_tokens(model, params, [[1] * 100], SamplingConfig(max_new_tokens=64))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate_tokens(model, params, [[1, 99]])
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0)


@pytest.mark.parametrize("top_k, top_p", [(0, 0.9), (20, 1.0), (20, 0.5), (1, 0.9), (0, 1.0)])
def test_top_k_top_p_filter_matches_transformers(top_k, top_p):
    """The kept set equals transformers' TopKLogitsWarper + TopPLogitsWarper (an independent
    implementation) on random logits without ties."""
    import torch
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    from spiritlm_jax.model.decode import _filter_logits

    logits = np.random.default_rng(top_k).normal(0, 3, (4, 500)).astype(np.float32)
    ours = np.asarray(_filter_logits(jnp.asarray(logits), jnp.int32(top_k), jnp.float32(top_p))) > -1e29
    ref = torch.from_numpy(logits)
    if top_k:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1:
        ref = TopPLogitsWarper(top_p)(None, ref)
    np.testing.assert_array_equal(ours, torch.isfinite(ref).numpy())
