"""Train state, its sharding, the loss and the jitted train / eval steps.

The state is a plain dict pytree {"step", "params", "opt_state"} so Orbax saves it as is. Its
shardings come from the parameters' logical axis names (optax keeps the flax `Partitioned` boxes in
its moment trees, so the optimizer state is sharded exactly like the parameters).

Batches are dicts of [B, T] int32 arrays (data/batch.py): tokens, targets (-1 = no target),
segment_ids, positions, loss_groups (ids in LOSS_GROUPS: 0 text, 1 speech, 2 interleaved). Gradient
accumulation splits B into `grad_accum` micro-batches and sums token losses before dividing by the total
target count, so accumulated and full-batch steps compute the same update.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from spiritlm_jax.data.batch import LOSS_GROUPS
from spiritlm_jax.model.llama import Llama, head_logits
from spiritlm_jax.model.sharding import batch_sharding, param_shardings


def _boxed_state(model: Llama, tx: optax.GradientTransformation, rng, seq_len: int):
    params = model.init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def state_shardings(model: Llama, tx, mesh, seq_len: int = 8):
    """NamedSharding pytree matching the (unboxed) train state."""
    abstract = jax.eval_shape(lambda: _boxed_state(model, tx, jax.random.PRNGKey(0), seq_len))
    return param_shardings(abstract, mesh)


def init_state(model: Llama, tx, rng, shardings, seq_len: int = 8):
    """Random init directly into the sharded layout (no full copy on one device)."""
    fn = jax.jit(lambda r: nn.unbox(_boxed_state(model, tx, r, seq_len)), out_shardings=shardings)
    return fn(rng)


def state_from_params(params, tx, shardings):
    """Train state around given (e.g. imported) parameters, placed on `shardings`."""
    params = jax.device_put(params, shardings["params"])
    fn = jax.jit(
        lambda p: {"step": jnp.zeros((), jnp.int32), "params": p, "opt_state": tx.init(p)},
        out_shardings=shardings,
    )
    return fn(params)


def _nll(logits_btv, targets_bt):
    """Next-token NLL [B, T] (0 where the target is -1) from fp32 logits."""
    logz_bt = jax.nn.logsumexp(logits_btv, axis=-1)
    tgt_bt = jnp.take_along_axis(logits_btv, jnp.maximum(targets_bt, 0)[..., None], axis=-1)[..., 0]
    return jnp.where(targets_bt >= 0, logz_bt - tgt_bt, 0.0)


def chunked_nll(model: Llama, params, hidden_btd, targets_bt, chunk: int):
    """NLL [B, T] with the LM head and cross-entropy applied `chunk` positions at a time.

    A `lax.map` over sequence chunks whose body is rematerialised (`jax.checkpoint`): the forward keeps
    only each chunk's NLL, the backward recomputes one chunk's [B, chunk, V] logits at a time, so the
    full [B, T, V] fp32 logits never exist. The sequence is padded to a multiple of `chunk` with no-target
    positions."""
    b, t, d = hidden_btd.shape
    n = -(-t // chunk)
    pad = n * chunk - t
    x_nbcd = jnp.pad(hidden_btd, ((0, 0), (0, pad), (0, 0))).reshape(b, n, chunk, d).swapaxes(0, 1)
    tgt_nbc = jnp.pad(targets_bt, ((0, 0), (0, pad)), constant_values=-1).reshape(b, n, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def one(args):
        x_bcd, tgt_bc = args
        logits_bcv = head_logits(model.cfg, params, x_bcd)
        logits_bcv = nn.with_logical_constraint(logits_bcv, ("batch", "length", "act_vocab"))
        return _nll(logits_bcv, tgt_bc)

    nll_nbc = jax.lax.map(one, (x_nbcd, tgt_nbc))
    return nll_nbc.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]


def token_losses(model: Llama, params, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sum of next-token NLL over valid targets, and per-loss-group sums/counts.

    With `model.loss_chunk` > 0 the head and cross-entropy run in chunks (`chunked_nll`); 0 computes the
    full [B, T, V] logits at once."""
    targets_bt = batch["targets"]
    valid_bt = targets_bt >= 0
    args = (batch["tokens"], batch["positions"], batch["segment_ids"])
    if model.cfg.loss_chunk > 0:
        hidden_btd = model.apply({"params": params}, *args, return_hidden=True)
        nll_bt = chunked_nll(model, params, hidden_btd, targets_bt, model.cfg.loss_chunk)
    else:
        nll_bt = _nll(model.apply({"params": params}, *args), targets_bt)
    group_btg = jax.nn.one_hot(batch["loss_groups"], len(LOSS_GROUPS), dtype=jnp.float32) * valid_bt[..., None]
    stats = {
        "nll_sum": nll_bt.sum(),
        "count": valid_bt.sum().astype(jnp.float32),
        "group_nll_sum": jnp.einsum("bt,btg->g", nll_bt, group_btg),
        "group_count": group_btg.sum((0, 1)),
    }
    return stats["nll_sum"], stats


def _split_micro(batch, n: int):
    return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)


def make_train_step(model: Llama, tx, schedule: Callable, grad_accum: int = 1):
    """(state, batch) -> (state, metrics); metrics are device scalars/vectors."""

    def step(state, batch):
        params = state["params"]
        grad_fn = jax.grad(lambda p, b: token_losses(model, p, b), has_aux=True)

        def micro(acc, mb):
            g, stats = grad_fn(params, mb)
            return jax.tree.map(jnp.add, acc, (g, stats)), None

        zero_stats = {
            "nll_sum": jnp.zeros(()),
            "count": jnp.zeros(()),
            "group_nll_sum": jnp.zeros(len(LOSS_GROUPS)),
            "group_count": jnp.zeros(len(LOSS_GROUPS)),
        }
        zero = (jax.tree.map(jnp.zeros_like, params), zero_stats)
        if grad_accum == 1:
            (grads, stats), _ = micro(zero, batch)
        else:
            (grads, stats), _ = jax.lax.scan(micro, zero, _split_micro(batch, grad_accum))
        denom = jnp.maximum(stats["count"], 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        new_state = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}
        metrics = {
            "loss": stats["nll_sum"] / denom,
            "tokens": stats["count"],
            "group_nll_sum": stats["group_nll_sum"],
            "group_count": stats["group_count"],
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state["step"]),
            "params_finite": tree_is_finite(new_params),
        }
        return new_state, metrics

    return step


def tree_is_finite(tree) -> jax.Array:
    """One boolean: every element of every leaf is finite (checked before a state may be saved)."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def make_eval_step(model: Llama):
    def step(params, batch):
        return token_losses(model, params, batch)[1]

    return step


def jit_train_step(step_fn, shardings, mesh):
    return jax.jit(
        step_fn,
        in_shardings=(shardings, batch_sharding(mesh)),
        out_shardings=(shardings, None),
        donate_argnums=(0,),
    )


def jit_eval_step(eval_fn, shardings, mesh):
    return jax.jit(eval_fn, in_shardings=(shardings["params"], batch_sharding(mesh)))


def loss_group_losses(group_nll_sum, group_count) -> dict[str, float]:
    """{"loss_text": ..., ...} for the loss groups that had targets."""
    out: dict[str, Any] = {}
    for i, g in enumerate(LOSS_GROUPS):
        if float(group_count[i]) > 0:
            out[f"loss_{g}"] = float(group_nll_sum[i]) / float(group_count[i])
    return out
