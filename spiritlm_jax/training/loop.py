"""The training loop: `run(cfg)` sets up the mesh, the run directory and the state (fresh, imported
or resumed), then steps; each job below is one function (state set-up, eval, save, logging)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
from tqdm import tqdm

from spiritlm_jax.bundle.lm import load_lm
from spiritlm_jax.config import ConfigError
from spiritlm_jax.data.batch import LOSS_GROUPS
from spiritlm_jax.data.pipeline import build_eval_batches, build_train_iterator, check_vocab
from spiritlm_jax.model.llama import Llama
from spiritlm_jax.model.sharding import activation_sharding, batch_sharding, make_mesh
from spiritlm_jax.model.vocab import extend_vocab
from spiritlm_jax.training import checkpoints as ckpt
from spiritlm_jax.training.config import TrainConfig
from spiritlm_jax.training.distributed import maybe_initialize_distributed
from spiritlm_jax.training.metrics import MetricsWriter, device_peak_flops, train_flops_per_token
from spiritlm_jax.training.optim import lr_schedule, make_optimizer
from spiritlm_jax.training.run_dir import write_run_dir
from spiritlm_jax.training.step import (
    init_state,
    jit_eval_step,
    jit_train_step,
    loss_group_losses,
    make_eval_step,
    make_train_step,
    state_from_params,
    state_shardings,
)

ARCH_FIELDS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "dim_per_head", "d_ff", "tie_embeddings")


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (non-finite loss); the last good checkpoint is kept."""


def _log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


# ----- set-up ---------------------------------------------------------------------------------


def _make_mesh(cfg: TrainConfig):
    """The device mesh, after checking that the global batch divides over it."""
    mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    global_batch = cfg.data.batch_size * jax.process_count()
    if global_batch % (dp * cfg.optim.grad_accum):
        raise ConfigError(
            f"global batch {global_batch} (data.batch_size x {jax.process_count()} processes) must divide by "
            f"data x fsdp = {dp} times optim.grad_accum = {cfg.optim.grad_accum}"
        )
    return mesh, global_batch


def _imported_params(cfg: TrainConfig, shardings_params):
    """Load a converted model, check its architecture, grow its vocabulary to cfg.model.vocab_size."""
    src_cfg, params = load_lm(cfg.init.checkpoint)
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


@dataclasses.dataclass
class _Run:
    """What the steps of one run share (built by `_set_up`)."""

    cfg: TrainConfig
    out_dir: Path
    mesh: Any
    global_batch: int
    model: Llama
    tx: Any
    shardings: Any
    mngr: Any
    data_iter: Any
    is_main: bool


def _set_up(cfg: TrainConfig) -> _Run:
    """Distributed init, config checks (before any compilation), mesh, run directory, optimizer,
    checkpoint manager and data iterator."""
    maybe_initialize_distributed(cfg.distributed)
    check_vocab(cfg.data, cfg.model.vocab_size)
    mesh, global_batch = _make_mesh(cfg)
    out_dir = Path(cfg.out_dir)
    is_main = jax.process_index() == 0
    if is_main:
        write_run_dir(cfg, out_dir)
    model = Llama(cfg.model)
    tx = make_optimizer(cfg.optim, cfg.steps)
    mngr = ckpt.manager(out_dir / "checkpoints", keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    data_iter = build_train_iterator(cfg.data, jax.process_index(), jax.process_count())
    return _Run(cfg, out_dir, mesh, global_batch, model, tx, state_shardings(model, tx, mesh), mngr, data_iter, is_main)


def _initial_state(r: _Run):
    """(state, start step): resumed from the latest checkpoint, imported from init.checkpoint, or fresh.
    An import is loaded and grown outside the mesh context; the rest runs inside it."""
    cfg = r.cfg
    latest = r.mngr.latest_step() if cfg.checkpoint.resume else None
    imported = _imported_params(cfg, r.shardings["params"]) if latest is None and cfg.init.checkpoint else None
    with activation_sharding(r.mesh):
        if latest is not None:
            shapes = jax.eval_shape(lambda: init_state(r.model, r.tx, jax.random.PRNGKey(0), r.shardings))
            state, data_state, _ = ckpt.restore(r.mngr, latest, ckpt.abstract_like(shapes, r.shardings))
            r.data_iter.set_state(data_state)
            _log(f"resumed from {r.out_dir / 'checkpoints'} at step {int(latest)}")
            return state, int(latest)
        if imported is not None:
            _log(f"initialised from {cfg.init.checkpoint} (vocabulary {cfg.model.vocab_size})")
            return state_from_params(imported, r.tx, r.shardings), 0
        return init_state(r.model, r.tx, jax.random.PRNGKey(cfg.init.seed), r.shardings), 0


# ----- steps, eval, save --------------------------------------------------------------------------


def _global_batch(local: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """Assemble the global batch from each process's local rows (multi-host safe)."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def _evaluate(eval_fn, params, batches, sharding) -> dict[str, float]:
    n = len(LOSS_GROUPS)
    tot = {"nll_sum": 0.0, "count": 0.0, "group_nll_sum": np.zeros(n), "group_count": np.zeros(n)}
    for b in batches:
        s = jax.device_get(eval_fn(params, _global_batch(b, sharding)))
        for k in tot:
            tot[k] = tot[k] + np.asarray(s[k])
    out = {"eval_loss": float(tot["nll_sum"]) / max(float(tot["count"]), 1.0)}
    out.update({f"eval_{k}": v for k, v in loss_group_losses(tot["group_nll_sum"], tot["group_count"]).items()})
    return out


def _stop_on_non_finite(r: _Run, loss: float, step: int) -> None:
    if math.isfinite(loss):
        return
    r.mngr.wait_until_finished()
    good = r.mngr.latest_step()
    raise TrainingStopped(
        f"loss is {loss} at step {step}; nothing was saved for this step. "
        f"Last good checkpoint: {r.out_dir / 'checkpoints' / str(good) if good is not None else 'none'}. "
        "Lower optim.lr, raise optim.warmup_steps or check the data."
    )


def _is_due(done: int, every: int, last: int) -> bool:
    return bool(every) and (done % every == 0 or done == last)


# ----- logging ------------------------------------------------------------------------------------


class _Logger:
    """Metrics records (metrics.jsonl + TensorBoard on process 0), throughput/MFU, the progress bar."""

    def __init__(self, r: _Run, start_step: int):
        cfg = r.cfg
        self.writer = MetricsWriter(r.out_dir, enabled=r.is_main)
        self.flops_tok = train_flops_per_token(cfg.model, cfg.data.seq_len)
        self.peak = device_peak_flops()
        _log(
            f"model: {cfg.model.num_params() / 1e6:.2f}M parameters; mesh data={r.mesh.shape['data']} "
            f"fsdp={r.mesh.shape['fsdp']} tensor={r.mesh.shape['tensor']}; global batch {r.global_batch} x "
            f"{cfg.data.seq_len} tokens"
        )
        self.bar: Optional[tqdm] = None
        if r.is_main and cfg.progress:
            self.bar = tqdm(
                total=cfg.steps,
                initial=start_step,
                desc="train",
                dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0,
            )
        self.t_last, self.tokens_since, self.first_loss, self.last = time.perf_counter(), 0.0, None, {}

    def step(self, m: dict, loss: float) -> None:
        self.first_loss = loss if self.first_loss is None else self.first_loss
        self.tokens_since += float(m["tokens"])
        if self.bar is not None:
            self.bar.update(1)

    def record(self, done: int, m: dict, loss: float) -> None:
        tps = self.tokens_since / max(time.perf_counter() - self.t_last, 1e-9)
        rec = {"loss": loss, "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"]), "tokens_per_s": tps}
        rec.update(loss_group_losses(m["group_nll_sum"], m["group_count"]))
        if self.peak:
            rec["mfu"] = self.flops_tok * tps / (self.peak * jax.device_count())
        self.writer.write(done, rec)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")
        self.t_last, self.tokens_since, self.last = time.perf_counter(), 0.0, rec

    def record_eval(self, done: int, ev: dict) -> None:
        self.writer.write(done, ev)
        self.last = {**self.last, **ev}

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.close()


def _summary(r: _Run, log: _Logger) -> dict:
    """summary.json, and the closing lines on process 0."""
    first, last, out_dir = log.first_loss, log.last, r.out_dir
    summary = {
        "steps": r.cfg.steps,
        "first_loss": first,
        "final": last,
        "checkpoint": str((out_dir / "checkpoints").absolute()),
        "metrics": str((out_dir / "metrics.jsonl").absolute()),
    }
    if r.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        fl = f"{first:.3f}" if first is not None else "n/a"
        ll = f"{last.get('loss', float('nan')):.3f}"
        _log(f"loss {fl} -> {ll}" + (f" (eval {last['eval_loss']:.3f})" if "eval_loss" in last else ""))
        _log(
            f"checkpoint: {summary['checkpoint']}  metrics: {summary['metrics']}  "
            f"(tensorboard --logdir {out_dir / 'tensorboard'})"
        )
        _log(f"export to Hugging Face: python tools/convert_weights/llama_to_hf.py --src {out_dir} --out HF_DIR")
        # --text is a text input: generate adds the [Text] marker itself
        _log(f'generate: python -m spiritlm_jax.generate --checkpoint {out_dir} --text "hello" --max-new-tokens 20')
    return summary


# ----- the run ------------------------------------------------------------------------------------


def run(cfg: TrainConfig) -> dict:
    """Train according to `cfg`. Returns a summary dict (also printed and written to summary.json)."""
    r = _set_up(cfg)
    state, start_step = _initial_state(r)
    with activation_sharding(r.mesh):
        schedule = lr_schedule(cfg.optim, cfg.steps)
        train_step = jit_train_step(make_train_step(r.model, r.tx, schedule, cfg.optim.grad_accum), r.shardings, r.mesh)
        eval_step = jit_eval_step(make_eval_step(r.model), r.shardings, r.mesh)
        bsh = batch_sharding(r.mesh)
        eval_batches = build_eval_batches(cfg.data, cfg.eval_batches, jax.process_index(), jax.process_count())
        log = _Logger(r, start_step)
        for step in range(start_step, cfg.steps):
            state, m = train_step(state, _global_batch(next(r.data_iter), bsh))
            m = jax.device_get(m)
            loss = float(m["loss"])
            done = step + 1
            _stop_on_non_finite(r, loss, done)
            log.step(m, loss)
            if _is_due(done, cfg.log_every, cfg.steps):
                log.record(done, m, loss)
            if eval_batches and _is_due(done, cfg.eval_every, cfg.steps):
                log.record_eval(done, _evaluate(eval_step, state["params"], eval_batches, bsh))
            if _is_due(done, cfg.checkpoint.every, cfg.steps):
                ckpt.save(r.mngr, done, state, r.data_iter.get_state(), cfg)
        log.close()
        r.mngr.wait_until_finished()
    return _summary(r, log)
