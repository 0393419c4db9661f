"""LLaMA core behaviour: KV cache, packing isolation, remat, vocab extension, sharding.

Parity with transformers' LlamaForCausalLM (through the converter) lives in test_convert_llama.py.
Tolerances: fp32 throughout; 1e-5 absolute on logits of order 1 for computations that only differ
in summation order (cache vs full pass, sharded vs unsharded), exact equality where nothing differs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiritlm_jax.config import ConfigError, from_dict
from spiritlm_jax.model.attention import attention, attention_mask
from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.llama import Llama, init_cache, init_params
from spiritlm_jax.model.sharding import (
    abstract_boxed_params,
    activation_sharding,
    batch_sharding,
    make_mesh,
    param_shardings,
)
from spiritlm_jax.model.vocab import extend_vocab

TINY = dict(vocab_size=97, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96, dtype="float32")


def tiny(**kw) -> LlamaConfig:
    return LlamaConfig(**{**TINY, **kw})


@pytest.fixture(scope="module")
def gqa():
    cfg = tiny()
    return cfg, init_params(cfg, jax.random.PRNGKey(0))


def _tokens(b, t, vocab, seed=1):
    return jax.random.randint(jax.random.PRNGKey(seed), (b, t), 0, vocab)


def test_param_tree_and_count(gqa):
    cfg, params = gqa
    shapes = jax.tree.map(lambda x: x.shape, params)
    assert shapes["layers"]["attn"]["q"]["kernel"] == (2, 64, 4, 16)
    assert shapes["layers"]["attn"]["k"]["kernel"] == (2, 64, 2, 16)
    assert shapes["layers"]["attn"]["o"]["kernel"] == (2, 4, 16, 64)
    assert shapes["layers"]["mlp"]["down"]["kernel"] == (2, 96, 64)
    assert shapes["lm_head"]["kernel"] == (64, 97)
    n = sum(x.size for x in jax.tree.leaves(params))
    assert n == cfg.num_params()


def test_tied_embeddings_have_no_head():
    cfg = tiny(tie_embeddings=True)
    params = init_params(cfg, jax.random.PRNGKey(0))
    assert "lm_head" not in params
    assert sum(x.size for x in jax.tree.leaves(params)) == cfg.num_params()


@pytest.mark.parametrize("chunks", [(7, 1, 1, 1), (3, 4, 2, 1)])
def test_kv_cache_matches_full_forward(gqa, chunks):
    cfg, params = gqa
    model = Llama(cfg)
    tokens = _tokens(2, sum(chunks), cfg.vocab_size)
    full = model.apply({"params": params}, tokens)
    cache = init_cache(cfg, 2, 16)
    outs, start = [], 0
    for n in chunks:
        logits, cache = model.apply({"params": params}, tokens[:, start : start + n], cache=cache)
        outs.append(logits)
        start += n
    assert int(cache["index"]) == sum(chunks)
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5, rtol=0)


def test_left_padded_cache_matches_unpadded(gqa):
    """A left-padded prompt (segment id 0 on pads, positions from its first real token) decodes
    exactly as the same prompt alone."""
    cfg, params = gqa
    model = Llama(cfg)
    prompt = _tokens(1, 5, cfg.vocab_size, seed=3)
    nxt = _tokens(1, 2, cfg.vocab_size, seed=4)
    alone = model.apply({"params": params}, jnp.concatenate([prompt, nxt], 1))
    pad = 3
    toks = jnp.concatenate([jnp.zeros((1, pad), jnp.int32), prompt], 1)
    seg = jnp.concatenate([jnp.zeros((1, pad), jnp.int32), jnp.ones((1, 5), jnp.int32)], 1)
    pos = jnp.maximum(jnp.arange(pad + 5) - pad, 0)[None]
    cache = init_cache(cfg, 1, 12)
    logits, cache = model.apply({"params": params}, toks, pos, seg, cache=cache)
    np.testing.assert_allclose(logits[:, pad:], alone[:, :5], atol=1e-5)
    for i in range(2):
        step, cache = model.apply(
            {"params": params}, nxt[:, i : i + 1], jnp.array([[5 + i]]), jnp.ones((1, 1), jnp.int32), cache=cache
        )
        np.testing.assert_allclose(step[:, 0], alone[:, 5 + i], atol=1e-5)


def test_packed_documents_do_not_attend_to_each_other(gqa):
    """Two documents packed in one row give the same logits as each alone, and perturbing one
    document's tokens leaves the other's logits bit-identical."""
    cfg, params = gqa
    model = Llama(cfg)
    a = _tokens(1, 6, cfg.vocab_size, seed=5)
    b = _tokens(1, 4, cfg.vocab_size, seed=6)
    packed = jnp.concatenate([a, b, jnp.zeros((1, 2), jnp.int32)], 1)
    seg = jnp.array([[1] * 6 + [2] * 4 + [0] * 2])
    pos = jnp.array([list(range(6)) + list(range(4)) + [0, 0]])
    out = model.apply({"params": params}, packed, pos, seg)
    np.testing.assert_allclose(out[:, :6], model.apply({"params": params}, a), atol=1e-5)
    np.testing.assert_allclose(out[:, 6:10], model.apply({"params": params}, b), atol=1e-5)
    perturbed = packed.at[0, 0].set((packed[0, 0] + 1) % cfg.vocab_size)
    out2 = model.apply({"params": params}, perturbed, pos, seg)
    np.testing.assert_array_equal(out2[:, 6:10], out[:, 6:10])
    assert not np.allclose(out2[:, :6], out[:, :6])


@pytest.mark.parametrize("backend", ["xla", "cudnn"])
def test_attention_backends_respect_segments(backend):
    if backend != "xla" and jax.default_backend() != "gpu":
        q, k, v, seg = _attn_inputs()
        with pytest.raises(ValueError, match="needs a GPU"):
            attention(q, k, v, seg, seg, backend=backend)
        return
    q, k, v, seg = _attn_inputs()
    out = attention(q, k, v, seg, seg, backend=backend)
    # Changing document 2's keys/values must not change document 1's outputs, on any backend.
    k2 = k.at[:, 5:].add(1.0)
    v2 = v.at[:, 5:].add(1.0)
    out2 = attention(q, k2, v2, seg, seg, backend=backend)
    np.testing.assert_array_equal(np.asarray(out2[:, :5]), np.asarray(out[:, :5]))
    ref = attention(q, k, v, seg, seg, backend="xla")
    np.testing.assert_allclose(out, ref, atol=2e-3 if backend == "cudnn" else 0)


def _attn_inputs():
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    q = jax.random.normal(ks[0], (2, 9, 4, 16))
    k = jax.random.normal(ks[1], (2, 9, 2, 16))
    v = jax.random.normal(ks[2], (2, 9, 2, 16))
    seg = jnp.array([[1] * 5 + [2] * 4, [1] * 5 + [2] * 3 + [0]])
    return q, k, v, seg


def test_attention_mask_semantics():
    seg_q = jnp.array([[1, 1, 2, 0]])
    m = np.asarray(attention_mask(seg_q, seg_q))[0]
    expected = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], bool)
    np.testing.assert_array_equal(m, expected)


REMAT_POLICIES = [
    "full",
    "minimal",
    "save_qkv_proj",
    "save_dot_except_mlp",
    "minimal_offloaded",
    "dots",
    "dots_no_batch",
    "save_proj",
]


def _remat_loss(p, c):
    tokens = _tokens(2, 8, c.vocab_size)
    logits = Llama(c).apply({"params": p}, tokens)
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, tokens[..., None], -1)[..., 0])


@pytest.fixture(scope="module")
def no_remat_loss_and_grads(gqa):
    cfg, params = gqa
    return jax.jit(jax.value_and_grad(_remat_loss), static_argnums=1)(params, cfg)


@pytest.mark.parametrize("policy", REMAT_POLICIES)
def test_remat_policies_same_loss_and_grads(gqa, no_remat_loss_and_grads, policy):
    cfg, params = gqa
    l0, g0 = no_remat_loss_and_grads
    l1, g1 = jax.jit(jax.value_and_grad(_remat_loss), static_argnums=1)(params, cfg.replace(remat=policy))
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, atol=1e-6)


# Per policy: how many [L, B, T, ...] activations the layer scan keeps for the backward pass (layer
# input; + q, k, v; + attention output projection; + MLP gate and up: the MLP down projection's output is
# allowed but never needed by the backward pass), and how many of them sit in host memory.
SAVED_PER_LAYER = {
    "full": (1, 0),
    "save_qkv_proj": (4, 0),
    "save_dot_except_mlp": (5, 0),
    "minimal": (7, 0),
    "minimal_offloaded": (7, 6),
}


@pytest.mark.parametrize("policy", SAVED_PER_LAYER)
def test_remat_policies_save_what_their_names_say(gqa, policy, capsys):
    cfg, params = gqa
    tokens = _tokens(2, 8, cfg.vocab_size)
    model = Llama(cfg.replace(remat=policy))
    jax.ad_checkpoint.print_saved_residuals(lambda p: model.apply({"params": p}, tokens).sum(), params)
    stacked = [line for line in capsys.readouterr().out.splitlines() if f"[{cfg.n_layers},2,8," in line]
    assert (len(stacked), sum("<host>" in line for line in stacked)) == SAVED_PER_LAYER[policy], stacked


def test_bf16_compute_close_to_fp32(gqa):
    cfg, params = gqa
    tokens = _tokens(2, 8, cfg.vocab_size)
    f32 = Llama(cfg).apply({"params": params}, tokens)
    b16 = Llama(cfg.replace(dtype="bfloat16")).apply({"params": params}, tokens)
    assert b16.dtype == jnp.float32  # logits are always fp32
    # bf16 has ~3 significant digits; logits here are O(0.3).
    np.testing.assert_allclose(b16, f32, atol=3e-2)


def test_extend_vocab_keeps_rows_and_logits():
    cfg = tiny(vocab_size=100)
    params = init_params(cfg, jax.random.PRNGKey(0))
    new, cfg2 = extend_vocab(params, cfg, 256, jax.random.PRNGKey(1))
    assert cfg2.vocab_size == 256
    np.testing.assert_array_equal(new["embed"]["embedding"][:100], params["embed"]["embedding"])
    np.testing.assert_array_equal(new["lm_head"]["kernel"][:, :100], params["lm_head"]["kernel"])
    assert 0.01 < float(jnp.std(new["embed"]["embedding"][100:])) < 0.03
    tokens = _tokens(1, 6, 100)
    old_logits = Llama(cfg).apply({"params": params}, tokens)
    new_logits = Llama(cfg2).apply({"params": new}, tokens)
    np.testing.assert_allclose(new_logits[..., :100], old_logits, atol=1e-6)
    with pytest.raises(ValueError, match="smaller"):
        extend_vocab(params, cfg, 50, jax.random.PRNGKey(1))


def test_spirit_lm_layout_sizes():
    """Extending a 32000-piece LLaMA to BASE / EXPRESSIVE gives the released table sizes."""
    cfg = tiny(vocab_size=32000, tie_embeddings=True)
    params = {"embed": {"embedding": jnp.zeros((32000, 64))}}
    for size in (32512, 32768):
        new, c = extend_vocab(params, cfg, size, jax.random.PRNGKey(0))
        assert new["embed"]["embedding"].shape == (size, 64) and c.vocab_size == size


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 4, 2), (4, 1, 2), (2, 4, 1)])
def test_sharded_forward_equals_unsharded(shape):
    assert jax.device_count() >= 8, "conftest sets 8 fake CPU devices"
    cfg = tiny(n_heads=4, n_kv_heads=2, vocab_size=128)
    model = Llama(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    tokens = _tokens(8, 8, cfg.vocab_size)
    ref = model.apply({"params": params}, tokens)

    mesh = make_mesh(*shape)
    shardings = param_shardings(abstract_boxed_params(model), mesh)
    sharded = jax.device_put(params, shardings)
    if shape[2] > 1:  # tensor axis really splits the heads
        assert sharded["layers"]["attn"]["q"]["kernel"].sharding.spec[2] == "tensor"
    toks = jax.device_put(tokens, batch_sharding(mesh))
    with activation_sharding(mesh):
        out = jax.jit(lambda p, t: model.apply({"params": p}, t))(sharded, toks)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_uneven_heads_fall_back_to_replication():
    cfg = tiny(n_heads=6, n_kv_heads=3, d_model=48, vocab_size=128)
    model = Llama(cfg)
    mesh = make_mesh(1, 2, 4)
    shardings = param_shardings(abstract_boxed_params(model), mesh)
    assert shardings["layers"]["attn"]["k"]["kernel"].spec[2] is None  # 3 kv heads on tensor=4
    params = init_params(cfg, jax.random.PRNGKey(0))
    tokens = _tokens(2, 5, cfg.vocab_size)
    ref = model.apply({"params": params}, tokens)
    with activation_sharding(mesh):
        out = jax.jit(lambda p, t: model.apply({"params": p}, t))(jax.device_put(params, shardings), tokens)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="n_kv_heads"):
        from_dict(LlamaConfig, {**TINY, "n_kv_heads": 3})
    with pytest.raises(ConfigError, match="unknown config key hiden_size"):
        from_dict(LlamaConfig, {"hiden_size": 3})
    with pytest.raises(ConfigError, match="d_model: expected an integer"):
        from_dict(LlamaConfig, {"d_model": "big"})
    with pytest.raises(ConfigError, match="attention"):
        from_dict(LlamaConfig, {"attention": "flash"})
