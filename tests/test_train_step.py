"""The train step: sharded == single device, accumulation == full batch, decay mask, schedules.

Tolerances: fp32; losses agree to 1e-5 relative (only reduction order differs between meshes).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.llama import Llama, init_params
from spiritlm_jax.model.sharding import activation_sharding, make_mesh
from spiritlm_jax.training.optim import OptimConfig, lr_schedule, make_optimizer
from spiritlm_jax.training.step import init_state, jit_train_step, make_train_step, state_shardings, token_losses

CFG = LlamaConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96, dtype="float32")


def _batches(n, b=8, t=16, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tokens = rng.integers(0, CFG.vocab_size, (b, t), dtype=np.int32)
        seg = np.ones((b, t), np.int32)
        seg[:, t // 2 :] = 2  # two packed documents per row
        pos = np.concatenate([np.arange(t // 2), np.arange(t - t // 2)])[None].repeat(b, 0).astype(np.int32)
        targets = np.roll(tokens, -1, 1)
        targets[:, t // 2 - 1] = -1  # no target across the document boundary
        targets[:, -1] = -1
        loss_groups = rng.integers(0, 3, (b, 1)).repeat(t, 1).astype(np.int32)
        out.append(
            dict(
                tokens=tokens, targets=targets.astype(np.int32), segment_ids=seg, positions=pos, loss_groups=loss_groups
            )
        )
    return out


def _run(mesh_shape, batches, grad_accum=1):
    ocfg = OptimConfig(lr=1e-2, warmup_steps=2, grad_accum=grad_accum)
    model = Llama(CFG)
    tx = make_optimizer(ocfg, 10)
    mesh = make_mesh(*mesh_shape, devices=jax.devices()[: int(np.prod(mesh_shape))])
    sh = state_shardings(model, tx, mesh)
    with activation_sharding(mesh):
        state = init_state(model, tx, jax.random.PRNGKey(0), sh)
        step = jit_train_step(make_train_step(model, tx, lr_schedule(ocfg, 10), grad_accum), sh, mesh)
        losses = []
        for b in batches:
            state, m = step(state, b)
            losses.append(float(m["loss"]))
    return losses, jax.device_get(state["params"])


def test_mesh_2x2x2_matches_single_device():
    batches = _batches(4)
    l1, p1 = _run((1, 1, 1), batches)
    l8, p8 = _run((2, 2, 2), batches)
    assert l1[-1] < l1[0]  # it learns
    np.testing.assert_allclose(l8, l1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_grad_accumulation_equals_full_batch():
    batches = _batches(3)
    l_full, p_full = _run((1, 1, 1), batches, grad_accum=1)
    l_acc, p_acc = _run((1, 1, 1), batches, grad_accum=4)
    np.testing.assert_allclose(l_acc, l_full, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_acc)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_weight_decay_mask_skips_norms_and_embeddings():
    params = {
        "embed": {"embedding": jnp.ones((4, 2))},
        "final_norm": {"scale": jnp.ones(2)},
        "layers": {"attn_norm": {"scale": jnp.ones((1, 2))}, "mlp": {"up": {"kernel": jnp.ones((1, 2, 2))}}},
    }
    zero = jax.tree.map(jnp.zeros_like, params)
    cfg = OptimConfig(lr=0.1, warmup_steps=0, weight_decay=0.5, grad_clip=0)
    tx = make_optimizer(cfg, 10)
    upd, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(upd["embed"]["embedding"]).max()) == 0
    assert float(jnp.abs(upd["final_norm"]["scale"]).max()) == 0
    assert float(jnp.abs(upd["layers"]["attn_norm"]["scale"]).max()) == 0
    assert float(jnp.abs(upd["layers"]["mlp"]["up"]["kernel"]).max()) > 0
    tx_all = make_optimizer(
        OptimConfig(lr=0.1, warmup_steps=0, weight_decay=0.5, grad_clip=0, decay_norms_and_embeddings=True), 10
    )
    upd, _ = tx_all.update(zero, tx_all.init(params), params)
    assert float(jnp.abs(upd["embed"]["embedding"]).max()) > 0


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_schedules(schedule):
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1)
    s = lr_schedule(cfg, 110)
    assert float(s(0)) == 0.0 and abs(float(s(5)) - 0.5) < 1e-6 and abs(float(s(10)) - 1.0) < 1e-6
    end = float(s(110))
    assert abs(end - (1.0 if schedule == "constant" else 0.1)) < 1e-6


@pytest.mark.parametrize("tied", [False, True])
def test_chunked_loss_equals_full_logits(tied):
    """model.loss_chunk: loss, per-group sums and gradients equal the full-logits loss (fp32, 1e-6
    relative; gradients within 1e-6 of each leaf's largest entry) for a chunk that does not divide T
    (16 / 5); untied on one device, tied under a 2x2x2 mesh. The chunked loss holds no [B, T, V] array."""
    cfg = CFG.replace(tie_embeddings=tied, n_layers=1)
    params = init_params(cfg, jax.random.PRNGKey(0))
    batch = {k: jnp.asarray(v) for k, v in _batches(1)[0].items()}
    batch["targets"] = batch["targets"].at[:, 3].set(-1)

    def loss_grads(chunk, p):
        model = Llama(cfg.replace(loss_chunk=chunk))
        return jax.jit(jax.value_and_grad(lambda p: token_losses(model, p, batch), has_aux=True))(p)

    (l0, s0), g0 = loss_grads(0, params)
    if tied:
        mesh = make_mesh(2, 2, 2)
        with activation_sharding(mesh):
            (l1, s1), g1 = loss_grads(5, jax.device_put(params, NamedSharding(mesh, P())))
    else:
        (l1, s1), g1 = loss_grads(5, params)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    np.testing.assert_allclose(s1["group_nll_sum"], s0["group_nll_sum"], rtol=1e-6)
    np.testing.assert_array_equal(s1["group_count"], s0["group_count"])
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6 * float(np.abs(a).max()))
    jaxpr = str(jax.make_jaxpr(lambda p: token_losses(Llama(cfg.replace(loss_chunk=5)), p, batch))(params))
    b, t = batch["tokens"].shape
    assert f"f32[{b},{t},{cfg.vocab_size}]" not in jaxpr
    assert f"f32[{b},5,{cfg.vocab_size}]" in jaxpr
