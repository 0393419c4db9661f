"""The splash attention backend (jax's Pallas TPU kernel, interpret mode on CPU) against the xla backend.

Tolerances (fp32 inputs of order 1): outputs and gradients within 2e-5 absolute / 2e-5 relative of
the xla backend (the kernel's online softmax sums in a different order); isolation of packed
documents is exact (bit-identical outputs of the untouched document).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiritlm_jax.model.attention import SplashBlocks, attention, resolve_backend, splash_padded_length
from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.llama import Llama, init_params
from spiritlm_jax.model.sharding import activation_sharding, make_mesh

BLOCKS = SplashBlocks(128, 128, 128, 128, 128)
TOL = dict(atol=2e-5, rtol=2e-5)


def _packed_segments(t: int, lengths_per_row) -> jax.Array:
    """Segment ids [B, t]: documents 1..n of the given (odd) lengths, then padding (0)."""
    rows = []
    for lengths in lengths_per_row:
        row = np.zeros(t, np.int32)
        start = 0
        for i, n in enumerate(lengths):
            row[start : start + n] = i + 1
            start += n
        rows.append(row)
    return jnp.asarray(np.stack(rows))


def _qkv(t, n, k, h=32, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (
        jax.random.normal(ks[0], (2, t, n, h)),
        jax.random.normal(ks[1], (2, t, k, h)),
        jax.random.normal(ks[2], (2, t, k, h)),
    )


SEGMENTS = {
    256: [(37, 101, 55, 63), (129, 77, 49)],  # row 0 fully packed; row 1 ends in 1 padding slot
    200: [(13, 91, 96), (121, 61)],  # not a block multiple: padded to 256 inside the backend
}


@pytest.mark.parametrize("t, heads", [(256, (8, 2)), (200, (4, 4))])
def test_splash_equals_xla_outputs_and_gradients(t, heads):
    q, k, v = _qkv(t, *heads)
    seg = _packed_segments(t, SEGMENTS[t])
    w = jax.random.normal(jax.random.PRNGKey(7), q.shape)  # a random cotangent

    def out_and_grads(q, k, v, backend):
        out, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, seg, seg, backend=backend, splash_blocks=BLOCKS), q, k, v)
        return out, vjp(w)

    out_s, g_s = jax.jit(out_and_grads, static_argnums=3)(q, k, v, "splash")
    out_x, g_x = out_and_grads(q, k, v, "xla")
    np.testing.assert_allclose(out_s, out_x, **TOL)
    for a, b in zip(g_s, g_x):
        np.testing.assert_allclose(a, b, **TOL)


def test_splash_perturbing_one_document_leaves_the_others_unchanged():
    q, k, v = _qkv(256, 8, 2, seed=3)
    seg = _packed_segments(256, SEGMENTS[256])
    f = jax.jit(lambda q, k, v: attention(q, k, v, seg, seg, backend="splash", splash_blocks=BLOCKS))
    out = f(q, k, v)
    doc2 = np.asarray(seg == 2)[:, :, None, None]
    out2 = f(q + doc2, k + doc2, v + doc2)  # change document 2 of every row
    keep = ~doc2[:, :, 0, 0]
    np.testing.assert_array_equal(np.asarray(out2)[keep], np.asarray(out)[keep])
    assert not np.allclose(np.asarray(out2)[~keep], np.asarray(out)[~keep])


def test_splash_model_and_sharded_equal_xla():
    """The tiny model with attention=splash under a 2x2x2 mesh (shard_map over batch and heads; kv heads
    2 on tensor 2) equals the unsharded xla model."""
    base = LlamaConfig(
        vocab_size=97, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=96, dtype="float32",
        splash_block_q=128, splash_block_kv=128, splash_block_kv_compute=128,
        splash_block_q_bwd=128, splash_block_kv_bwd=128,
    )  # fmt: skip
    params = init_params(base, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 128), 0, 97)
    seg = _packed_segments(128, [(50, 78), (127,), (1, 127), (64, 31, 33)])
    pos = jnp.asarray(np.concatenate([np.arange(128)[None]] * 4))
    ref = Llama(base).apply({"params": params}, tokens, pos, seg)
    splash = Llama(base.replace(attention="splash"))
    mesh = make_mesh(2, 2, 2)
    with activation_sharding(mesh):
        out = jax.jit(splash.apply)({"params": params}, tokens, pos, seg)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_auto_backend_and_block_validation():
    assert [resolve_backend("auto", p) for p in ("tpu", "gpu", "cpu")] == ["splash", "cudnn", "xla"]
    assert resolve_backend("xla", "tpu") == "xla"
    assert resolve_backend("auto") == "xla"  # this test process runs on CPU
    assert splash_padded_length(4096, SplashBlocks()) == (4096, SplashBlocks())
    assert splash_padded_length(200, SplashBlocks(512, 1024, 512, 512, 256))[0] == 256
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        resolve_backend("flash")
    with pytest.raises(ValueError, match="splash_block_kv must be a positive multiple of 128"):
        LlamaConfig(splash_block_kv=100)
    with pytest.raises(ValueError, match="splash_block_kv_compute"):
        LlamaConfig(splash_block_kv=512, splash_block_kv_compute=384)


def test_leak_check_script_passes_and_its_control_leaks(capsys):
    from benchmarks.attention_leak import main

    assert main(["--batch", "1", "--seq", "128", "--heads", "4", "--kv-heads", "2", "--head-dim", "16"]) == 0
    out = capsys.readouterr().out
    assert "splash   leak=0 " in out and "control" in out and "leaks, as expected" in out
