"""The training loop: mesh, state (fresh, imported or resumed), data, steps, eval, checkpoints, logs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import numpy as np

from spiritlm_jax.config import ConfigError, save_config
from spiritlm_jax.model.llama import Llama
from spiritlm_jax.model.sharding import activation_sharding, batch_sharding, make_mesh
from spiritlm_jax.model.vocab import extend_vocab
from spiritlm_jax.training import checkpoints as ckpt
from spiritlm_jax.training.metrics import MetricsWriter, device_peak_flops, train_flops_per_token
from spiritlm_jax.training.optim import lr_schedule, make_optimizer
from spiritlm_jax.training.step import (
    init_state, jit_eval_step, jit_train_step, kind_losses, make_eval_step, make_train_step,
    state_from_params, state_shardings,
)

ARCH_FIELDS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "dim_per_head", "d_ff", "tie_embeddings")


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (non-finite loss); the last good checkpoint is kept."""


def _log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


def _imported_params(cfg, shardings_params):
    """Load a converted model, check its architecture, grow its vocabulary to cfg.model.vocab_size."""
    from spiritlm_jax.checkpoint import load_model

    src_cfg, params = load_model(cfg.init.checkpoint)
    for f in ARCH_FIELDS:
        if getattr(src_cfg, f) != getattr(cfg.model, f):
            raise ConfigError(
                f"model.{f}={getattr(cfg.model, f)} but the checkpoint {cfg.init.checkpoint} has {getattr(src_cfg, f)}"
            )
    if src_cfg.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the checkpoint's {src_cfg.vocab_size}"
        )
    params, _ = extend_vocab(params, src_cfg, cfg.model.vocab_size, jax.random.PRNGKey(cfg.init.seed + 1))
    return jax.device_put(params, shardings_params)


def _global_batch(local: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """Assemble the global batch from each process's local rows (multi-host safe)."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def _evaluate(eval_fn, params, batches, sharding) -> dict[str, float]:
    tot = {"nll_sum": 0.0, "count": 0.0, "kind_nll_sum": np.zeros(3), "kind_count": np.zeros(3)}
    for b in batches:
        s = jax.device_get(eval_fn(params, _global_batch(b, sharding)))
        for k in tot:
            tot[k] = tot[k] + np.asarray(s[k])
    out = {"eval_loss": float(tot["nll_sum"]) / max(float(tot["count"]), 1.0)}
    out.update({f"eval_{k}": v for k, v in kind_losses(tot["kind_nll_sum"], tot["kind_count"]).items()})
    return out


def run(cfg) -> dict:
    """Train according to `cfg` (a TrainConfig). Returns a summary dict (also printed)."""
    from spiritlm_jax.data.pipeline import build_eval_batches, build_train_iterator, check_vocab
    from spiritlm_jax.train import maybe_initialize_distributed

    maybe_initialize_distributed(cfg.distributed)
    check_vocab(cfg.data, cfg.model.vocab_size)  # config errors before any compilation
    mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    global_batch = cfg.data.batch_size * jax.process_count()
    if global_batch % (dp * cfg.optim.grad_accum):
        raise ConfigError(
            f"global batch {global_batch} (data.batch_size x {jax.process_count()} processes) must divide by "
            f"data x fsdp = {dp} times optim.grad_accum = {cfg.optim.grad_accum}"
        )
    out_dir = Path(cfg.out_dir)
    is_main = jax.process_index() == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")

    model = Llama(cfg.model)
    tx = make_optimizer(cfg.optim, cfg.steps)
    schedule = lr_schedule(cfg.optim, cfg.steps)
    shardings = state_shardings(model, tx, mesh)
    mngr = ckpt.manager(out_dir / "checkpoints", keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    data_iter = build_train_iterator(cfg.data, jax.process_index(), jax.process_count())

    start_step = 0
    latest = mngr.latest_step() if cfg.checkpoint.resume else None
    imported = None
    if latest is None and cfg.init.checkpoint:  # load and grow outside the mesh context, then place
        imported = _imported_params(cfg, shardings["params"])
    with activation_sharding(mesh):
        if latest is not None:
            shapes = jax.eval_shape(lambda: init_state(model, tx, jax.random.PRNGKey(0), shardings))
            state, data_state, _ = ckpt.restore(mngr, latest, ckpt.abstract_like(shapes, shardings))
            data_iter.set_state(data_state)
            start_step = int(latest)
            _log(f"resumed from {out_dir / 'checkpoints'} at step {start_step}")
        elif imported is not None:
            state = state_from_params(imported, tx, shardings)
            _log(f"initialised from {cfg.init.checkpoint} (vocabulary {cfg.model.vocab_size})")
        else:
            state = init_state(model, tx, jax.random.PRNGKey(cfg.init.seed), shardings)

        train_step = jit_train_step(make_train_step(model, tx, schedule, cfg.optim.grad_accum), shardings, mesh)
        eval_step = jit_eval_step(make_eval_step(model), shardings, mesh)
        bsh = batch_sharding(mesh)
        eval_batches = build_eval_batches(cfg.data, cfg.eval_batches, jax.process_index(), jax.process_count())

        writer = MetricsWriter(out_dir, enabled=is_main)
        n_params = cfg.model.num_params()
        flops_tok = train_flops_per_token(cfg.model, cfg.data.seq_len)
        peak = device_peak_flops()
        _log(f"model: {n_params / 1e6:.2f}M parameters; mesh data={mesh.shape['data']} fsdp={mesh.shape['fsdp']} "
             f"tensor={mesh.shape['tensor']}; global batch {global_batch} x {cfg.data.seq_len} tokens")

        bar = None
        if is_main and cfg.progress:
            from tqdm import tqdm

            import sys

            bar = tqdm(total=cfg.steps, initial=start_step, desc="train", dynamic_ncols=True,
                       mininterval=0.5 if sys.stderr.isatty() else 30.0)
        t_last, tokens_since, first_loss, last = time.perf_counter(), 0.0, None, {}
        for step in range(start_step, cfg.steps):
            local = next(data_iter)
            state, m = train_step(state, _global_batch(local, bsh))
            m = jax.device_get(m)
            loss = float(m["loss"])
            if not math.isfinite(loss):
                mngr.wait_until_finished()
                good = mngr.latest_step()
                raise TrainingStopped(
                    f"loss is {loss} at step {step + 1}; nothing was saved for this step. "
                    f"Last good checkpoint: {out_dir / 'checkpoints' / str(good) if good is not None else 'none'}. "
                    "Lower optim.lr, raise optim.warmup_steps or check the data."
                )
            first_loss = loss if first_loss is None else first_loss
            tokens_since += float(m["tokens"])
            done = step + 1
            if bar is not None:
                bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                dt = time.perf_counter() - t_last
                tps = tokens_since / max(dt, 1e-9)
                rec = {"loss": loss, "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"]), "tokens_per_s": tps}
                rec.update(kind_losses(m["kind_nll_sum"], m["kind_count"]))
                if peak:
                    rec["mfu"] = flops_tok * tps / (peak * jax.device_count())
                writer.write(done, rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")
                t_last, tokens_since, last = time.perf_counter(), 0.0, rec
            if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps) and eval_batches:
                ev = _evaluate(eval_step, state["params"], eval_batches, bsh)
                writer.write(done, ev)
                last = {**last, **ev}
            if done % cfg.checkpoint.every == 0 or done == cfg.steps:
                ckpt.save(mngr, done, state, data_iter.get_state(), cfg)
        if bar is not None:
            bar.close()
        mngr.wait_until_finished()
        writer.close()

    summary = {"steps": cfg.steps, "first_loss": first_loss, "final": last,
               "checkpoint": str((out_dir / "checkpoints").absolute()), "metrics": str((out_dir / "metrics.jsonl").absolute())}
    if is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        fl = f"{first_loss:.3f}" if first_loss is not None else "n/a"
        ll = f"{last.get('loss', float('nan')):.3f}"
        _log(f"loss {fl} -> {ll}" + (f" (eval {last['eval_loss']:.3f})" if "eval_loss" in last else ""))
        _log(f"checkpoint: {summary['checkpoint']}  metrics: {summary['metrics']}  "
             f"(tensorboard --logdir {out_dir / 'tensorboard'})")
        _log(f"generate: python -m spiritlm_jax.generate --checkpoint {out_dir} --text \"[Text]hello\"")
    return summary
