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
from spiritlm_jax.model.llama import Llama
from spiritlm_jax.model.lora import combine
from spiritlm_jax.model.sharding import batch_sharding, param_shardings


def model_params(model: Llama, rng, seq_len: int = 8):
    """The (boxed) parameters `model.init` creates: what the LM trainer trains."""
    return model.init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]


def _boxed_state(model: Llama, tx: optax.GradientTransformation, rng, seq_len: int, trainable: Callable = model_params):
    params = trainable(model, rng, seq_len)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def state_shardings(model: Llama, tx, mesh, seq_len: int = 8, trainable: Callable = model_params):
    """NamedSharding pytree matching the (unboxed) train state. `trainable(model, rng, seq_len)`: the
    boxed parameters that are trained (all of them; LoRA: the adapters)."""
    abstract = jax.eval_shape(lambda: _boxed_state(model, tx, jax.random.PRNGKey(0), seq_len, trainable))
    return param_shardings(abstract, mesh)


def init_state(model: Llama, tx, rng, shardings, seq_len: int = 8, trainable: Callable = model_params):
    """Random init directly into the sharded layout (no full copy on one device)."""
    fn = jax.jit(lambda r: nn.unbox(_boxed_state(model, tx, r, seq_len, trainable)), out_shardings=shardings)
    return fn(rng)


def state_from_params(params, tx, shardings):
    """Train state around given (e.g. imported) parameters, placed on `shardings`."""
    params = jax.device_put(params, shardings["params"])
    fn = jax.jit(
        lambda p: {"step": jnp.zeros((), jnp.int32), "params": p, "opt_state": tx.init(p)},
        out_shardings=shardings,
    )
    return fn(params)


def token_losses(model: Llama, params, batch, frozen=None, rng=None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sum of next-token NLL over valid targets, and per-loss-group sums/counts. `frozen`: parameters
    that are used but not trained (LoRA: the base weights, with `params` the adapters); `rng`: the
    dropout key (LoRA dropout)."""
    variables = {"params": params if not frozen else combine(frozen, params)}
    rngs = {"dropout": rng} if rng is not None else None
    logits_btv = model.apply(variables, batch["tokens"], batch["positions"], batch["segment_ids"], rngs=rngs)
    targets_bt = batch["targets"]
    valid_bt = targets_bt >= 0
    logz_bt = jax.nn.logsumexp(logits_btv, axis=-1)
    tgt_bt = jnp.take_along_axis(logits_btv, jnp.maximum(targets_bt, 0)[..., None], axis=-1)[..., 0]
    nll_bt = jnp.where(valid_bt, logz_bt - tgt_bt, 0.0)
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


def make_train_step(model: Llama, tx, schedule: Callable, grad_accum: int = 1, dropout_seed=None):
    """(state, batch, frozen) -> (state, metrics); metrics are device scalars/vectors. `frozen`: the
    parameters used but not trained (None: everything is trained); `dropout_seed`: dropout keys are
    (seed, step), so a resumed run draws the same masks."""

    def step(state, batch, frozen=None):
        params = state["params"]
        rng = None if dropout_seed is None else jax.random.fold_in(jax.random.PRNGKey(dropout_seed), state["step"])
        grad_fn = jax.grad(lambda p, b: token_losses(model, p, b, frozen, rng), has_aux=True)

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
    def step(params, batch, frozen=None):
        return token_losses(model, params, batch, frozen)[1]

    return step


def jit_train_step(step_fn, shardings, mesh, frozen_shardings=None):
    """The jitted step; with `frozen_shardings` it takes the frozen parameters as a third argument."""
    extra = () if frozen_shardings is None else (frozen_shardings,)
    return jax.jit(
        step_fn,
        in_shardings=(shardings, batch_sharding(mesh), *extra),
        out_shardings=(shardings, None),
        donate_argnums=(0,),
    )


def jit_eval_step(eval_fn, shardings, mesh, frozen_shardings=None):
    extra = () if frozen_shardings is None else (frozen_shardings,)
    return jax.jit(eval_fn, in_shardings=(shardings["params"], batch_sharding(mesh), *extra))


def loss_group_losses(group_nll_sum, group_count) -> dict[str, float]:
    """{"loss_text": ..., ...} for the loss groups that had targets."""
    out: dict[str, Any] = {}
    for i, g in enumerate(LOSS_GROUPS):
        if float(group_count[i]) > 0:
            out[f"loss_{g}"] = float(group_nll_sum[i]) / float(group_count[i])
    return out
