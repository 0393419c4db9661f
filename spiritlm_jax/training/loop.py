"""The training loop: `run(cfg)` sets up the mesh, the run directory and the state (fresh, imported
or resumed), then steps; each job below is one function (state set-up, eval, save, logging)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np
from tqdm import tqdm

from spiritlm_jax import aot, paths
from spiritlm_jax import run_guard as guard
from spiritlm_jax.bundle.lm import load_lm
from spiritlm_jax.bundle.train_layout import quiet_orbax_errors
from spiritlm_jax.config import ConfigError, to_dict
from spiritlm_jax.data.batch import BATCH_KEYS, LOSS_GROUPS
from spiritlm_jax.data.pipeline import build_eval_batches, build_train_iterator, check_vocab
from spiritlm_jax.locking import DirLocked, lock_dir
from spiritlm_jax.model.llama import Llama
from spiritlm_jax.model.sharding import activation_sharding, batch_sharding, make_mesh
from spiritlm_jax.model.vocab import extend_vocab
from spiritlm_jax.training import checkpoints as ckpt
from spiritlm_jax.training.config import TrainConfig
from spiritlm_jax.training.distributed import maybe_initialize_distributed
from spiritlm_jax.training.metrics import MetricsWriter, device_peak_flops, train_flops_per_token
from spiritlm_jax.training.optim import lr_schedule, make_optimizer
from spiritlm_jax.training.remote_run import staged
from spiritlm_jax.training.run_dir import RUN_POLICY, write_run_dir
from spiritlm_jax.training.step import (
    init_state,
    jit_eval_step,
    jit_train_step,
    loss_group_losses,
    make_eval_step,
    make_train_step,
    model_params,
    state_from_params,
    state_shardings,
    tree_is_finite,
)

ARCH_FIELDS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "dim_per_head", "d_ff", "tie_embeddings")


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (non-finite loss or parameters, a failed save); the last good
    checkpoint is kept."""


def _log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


# ----- set-up ---------------------------------------------------------------------------------


def _make_mesh(cfg: TrainConfig, devices=None, processes: Optional[int] = None):
    """The device mesh (of `devices`, default all) and the global batch (data.batch_size x the
    processes), after checking that the batch divides over the mesh."""
    processes = jax.process_count() if processes is None else processes
    try:
        mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor, devices=devices)
    except ValueError as e:
        raise ConfigError(f"mesh: {e}") from None
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    global_batch = cfg.data.batch_size * processes
    if global_batch % (dp * cfg.optim.grad_accum):
        raise ConfigError(
            f"global batch {global_batch} (data.batch_size x {processes} processes) must divide by "
            f"data x fsdp = {dp} times optim.grad_accum = {cfg.optim.grad_accum}"
        )
    return mesh, global_batch


def _jit_train_step(cfg: TrainConfig, task: "Task", model, tx, shardings, mesh, frozen_shardings=None):
    """The run's jitted train step (compile-only mode compiles this very function)."""
    schedule = lr_schedule(cfg.optim, cfg.steps)
    step_fn = make_train_step(model, tx, schedule, cfg.optim.grad_accum, task.dropout_seed(cfg))
    return jit_train_step(step_fn, shardings, mesh, frozen_shardings)


def _compile_target(cfg: TrainConfig, task: "Task", devices, hosts: int) -> aot.Target:
    """The train step of a run on `devices` (a pod's, from its topology) with abstract arguments: the
    task's model, trained parameters and optimizer state, and its frozen parameters (LoRA: the base)."""
    mesh, global_batch = _make_mesh(cfg, devices, hosts)
    model, tx = task.model(cfg), make_optimizer(cfg.optim, cfg.steps)
    shardings = state_shardings(model, tx, mesh, trainable=task.trainable)
    frozen, frozen_shardings = task.frozen_shapes(cfg, mesh)
    with activation_sharding(mesh):
        shapes = jax.eval_shape(
            lambda: init_state(model, tx, jax.random.PRNGKey(0), shardings, trainable=task.trainable)
        )
        step = _jit_train_step(cfg, task, model, tx, shardings, mesh, frozen_shardings)
    state = ckpt.abstract_like(shapes, shardings)
    bsh = batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct((global_batch, cfg.data.seq_len), np.int32, sharding=bsh) for k in BATCH_KEYS}
    per_chip = global_batch // (mesh.shape["data"] * mesh.shape["fsdp"])
    knobs = (
        f"fewer sequences per chip (data.batch_size; now {per_chip} per data-parallel chip) with optim.grad_accum, "
        f"model.remat (now {cfg.model.remat}), model.attention (now {cfg.model.attention}), mesh.tensor, "
        "or a pod with more chips"
    )
    return aot.Target(
        step=step,
        args=(state, batch) + (() if frozen is None else (frozen,)),
        global_batch=global_batch,
        seq_len=cfg.data.seq_len,
        knobs=knobs,
        model_flops_per_step=train_flops_per_token(cfg.model, cfg.data.seq_len) * global_batch * cfg.data.seq_len,
        mesh=f"data={mesh.shape['data']} fsdp={mesh.shape['fsdp']} tensor={mesh.shape['tensor']}",
        context=lambda: activation_sharding(mesh),
    )


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


def _lm_train_iterator(cfg, process_index: int, process_count: int):
    try:
        return build_train_iterator(cfg.data, process_index, process_count)
    except (ValueError, OSError) as e:  # a truncated shard, a bad line: named, one line
        raise ConfigError(f"data.corpus: {e}") from None


def _lm_eval_batches(cfg, n: int, process_index: int, process_count: int) -> list:
    try:
        return build_eval_batches(cfg.data, n, process_index, process_count)
    except (ValueError, OSError) as e:
        raise ConfigError(f"data.corpus (eval split): {e}") from None


def _lm_start_params(cfg, shardings_params):
    """(params, where from) of init.checkpoint, or None (random init)."""
    if not cfg.init.checkpoint:
        return None
    return _imported_params(cfg, shardings_params), f"{cfg.init.checkpoint} (vocabulary {cfg.model.vocab_size})"


@dataclasses.dataclass(frozen=True)
class Task:
    """What a trainer built on this loop supplies. The defaults are LM pretraining
    (`python -m spiritlm_jax.train`); fine-tuning (training/finetune.py) gives its pair data, its run
    directory, the base weights to start from and, for LoRA, the wrapped model, the adapters as the
    trained parameters and the base weights as frozen ones. Each is a function of the run's config."""

    policy: guard.RunDirPolicy = RUN_POLICY
    check: Callable = lambda cfg: check_vocab(cfg.data, cfg.model.vocab_size)  # config errors before compiling
    train_iterator: Callable = _lm_train_iterator  # (cfg, process index, count) -> checkpointable batches
    eval_batches: Callable = _lm_eval_batches  # (cfg, n, process index, count) -> [batch]
    model: Callable = lambda cfg: Llama(cfg.model)  # the module the loss runs
    eval_model: Optional[Callable] = None  # the module held-out losses run (None: `model`; LoRA: no dropout)
    trainable: Callable = model_params  # (model, rng, seq_len) -> the boxed parameters that are trained
    start_params: Callable = _lm_start_params  # (cfg, param shardings) -> (params, where) or None (random)
    frozen: Callable = lambda cfg, mesh: (None, None)  # (cfg, mesh) -> (untrained params placed, shardings)
    frozen_shapes: Callable = lambda cfg, mesh: (None, None)  # the same as ShapeDtypeStructs (compile-only)
    write_run_dir: Callable = lambda cfg, out_dir: write_run_dir(cfg, out_dir)  # the run directory's other files
    init_seed: Callable = lambda cfg: cfg.init.seed
    dropout_seed: Callable = lambda cfg: None  # a seed: dropout keys per step (LoRA dropout)
    export_hint: Callable = lambda out_dir: f"python tools/convert_weights/llama_to_hf.py --src {out_dir} --out HF_DIR"


LM_TASK = Task()


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
    task: Task = LM_TASK
    frozen: Any = None  # parameters used but not trained (LoRA: the base weights)
    frozen_shardings: Any = None
    pending_save: Optional[int] = None  # the step of a save that may still be in flight
    upload: Optional[Any] = None  # a run directory on a bucket: uploads the local copy (remote_run)


def _set_up(cfg: TrainConfig, out_dir: Path, upload=None, task: Task = LM_TASK) -> _Run:
    """Config checks (before any compilation), mesh, run directory (`out_dir`: cfg.out_dir or its
    local copy), optimizer, checkpoint manager, data iterator and the task's frozen parameters."""
    task.check(cfg)
    mesh, global_batch = _make_mesh(cfg)
    is_main = jax.process_index() == 0
    model = task.model(cfg)
    tx = make_optimizer(cfg.optim, cfg.steps)
    if is_main or not cfg.checkpoint.fresh:  # process 0 clears a fresh run; the others only start at 0
        guard.check_start(
            out_dir,
            task.policy,
            cfg.checkpoint.resume,
            cfg.checkpoint.fresh,
            ckpt.steps_on_disk(out_dir / "checkpoints"),
            log=_log,
        )
    mngr = ckpt.manager(out_dir / "checkpoints", keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    data_iter = task.train_iterator(cfg, jax.process_index(), jax.process_count())
    shardings = state_shardings(model, tx, mesh, trainable=task.trainable)
    frozen, frozen_shardings = task.frozen(cfg, mesh)
    return _Run(
        cfg,
        out_dir,
        mesh,
        global_batch,
        model,
        tx,
        shardings,
        mngr,
        data_iter,
        is_main,
        task,
        frozen,
        frozen_shardings,
        upload=upload,
    )


def _steps_change_is_free(saved: dict, cfg: TrainConfig, at: int) -> bool:
    """A new `steps` keeps every step to come at the learning rate the saved run would have used."""
    try:
        old = lr_schedule(cfg.optim, int(saved["steps"]))  # optim changes are checked on their own
    except (KeyError, TypeError, ValueError):
        return False
    new = lr_schedule(cfg.optim, cfg.steps)
    future = np.arange(at, max(cfg.steps, at + 1))
    return bool(np.allclose(np.asarray(old(future)), np.asarray(new(future)), rtol=1e-6, atol=0))


def _check_config(r: _Run, meta: dict, where: str) -> dict:
    """The accepted changes between a checkpoint's config and this run's (RunDirError otherwise)."""
    saved, new = meta.get("config"), to_dict(r.cfg)
    if not isinstance(saved, dict):
        raise ValueError("its meta item holds no config")
    if saved.get("steps") != new["steps"] and _steps_change_is_free(saved, r.cfg, int(meta.get("step", 0))):
        saved = {**saved, "steps": new["steps"]}
    return guard.check_resume_config(saved, new, r.task.policy, r.cfg.checkpoint.allow_changes, where)


def _restore(r: _Run, step: int):
    """(state, meta, accepted config changes) of checkpoint `step`: its meta is read and its config
    checked against this run's before the state is restored; any failure to read raises."""
    where = r.out_dir / "checkpoints" / str(step)
    meta = ckpt.read_meta(r.out_dir / "checkpoints", step)
    changes = _check_config(r, meta, f"checkpoint {where}")
    if int(meta.get("step", -1)) != step:
        raise ValueError(f"its meta item says step {meta.get('step')}")
    shapes = jax.eval_shape(
        lambda: init_state(r.model, r.tx, jax.random.PRNGKey(0), r.shardings, trainable=r.task.trainable)
    )
    state, data_state, _ = ckpt.restore(r.mngr, step, ckpt.abstract_like(shapes, r.shardings))
    if not bool(jax.device_get(tree_is_finite(state["params"]))):
        raise ValueError("its parameters are not finite")
    r.data_iter.set_state(data_state)
    return state, meta, changes


def _initial_state(r: _Run):
    """(state, start step, first loss): resumed from the newest readable checkpoint (its config
    checked first), imported from init.checkpoint, or fresh; then the run directory is written.
    An import is loaded and grown outside the mesh context; the rest runs inside it."""
    cfg = r.cfg
    steps = r.mngr.all_steps() if cfg.checkpoint.resume and not cfg.checkpoint.fresh else []
    restored = None
    if steps:
        with activation_sharding(r.mesh):
            restored = guard.restore_with_fallback(
                r.out_dir / "checkpoints",
                steps,
                lambda s: _restore(r, s),
                r.task.policy,
                log=_log,
                can_move=r.is_main,
            )
        r.mngr.reload()
    start, first_loss, changes = 0, None, {}
    if restored is not None:
        start, (state, meta, changes) = int(restored[0]), restored[1]
        first_loss = meta.get("first_loss")
        if start > cfg.steps:
            raise guard.RunDirError(
                f"{r.out_dir} is at step {start} already, past steps={cfg.steps}; raise steps or use a new out_dir"
            )
    imported = None
    if restored is None:
        imported = r.task.start_params(cfg, r.shardings["params"])  # its errors come before anything is written
    if r.is_main:  # only now: the directory never pairs a checkpoint with another run's config
        r.task.write_run_dir(cfg, r.out_dir)
        guard.record_changes(r.out_dir, start, changes)
        guard.truncate_metrics(r.out_dir, r.task.policy, start)
    if restored is not None:
        _log(f"resumed from {r.out_dir / 'checkpoints'} at step {start}")
        if changes:
            _log(f"config changes accepted (checkpoint.allow_changes): {guard.show_changes(changes)}")
        return state, start, first_loss
    with activation_sharding(r.mesh):
        if imported is not None:
            params, where = imported
            _log(f"initialised from {where}")
            return state_from_params(params, r.tx, r.shardings), 0, None
        key = jax.random.PRNGKey(r.task.init_seed(cfg))
        return init_state(r.model, r.tx, key, r.shardings, trainable=r.task.trainable), 0, None


# ----- steps, eval, save --------------------------------------------------------------------------


def _global_batch(local: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """Assemble the global batch from each process's local rows (multi-host safe)."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def _evaluate(eval_fn, params, batches, sharding, frozen=None) -> dict[str, float]:
    n = len(LOSS_GROUPS)
    tot = {"nll_sum": 0.0, "count": 0.0, "group_nll_sum": np.zeros(n), "group_count": np.zeros(n)}
    extra = () if frozen is None else (frozen,)
    for b in batches:
        s = jax.device_get(eval_fn(params, _global_batch(b, sharding), *extra))
        for k in tot:
            tot[k] = tot[k] + np.asarray(s[k])
    out = {"eval_loss": float(tot["nll_sum"]) / max(float(tot["count"]), 1.0)}
    out.update({f"eval_{k}": v for k, v in loss_group_losses(tot["group_nll_sum"], tot["group_count"]).items()})
    return out


def _next_batch(r: _Run, step: int) -> dict:
    try:
        return next(r.data_iter)
    except (ValueError, OSError) as e:  # a record that cannot be read (named by the source)
        raise TrainingStopped(f"reading the data for step {step} failed: {e}. Last good checkpoint: {_last_good(r)}")


def _last_good(r: _Run) -> str:
    try:
        r.mngr.wait_until_finished()
    except Exception:  # noqa: BLE001  a failed background save is reported by the caller
        pass
    r.mngr.reload()
    good = r.mngr.latest_step()
    return str(r.out_dir / "checkpoints" / str(good)) if good is not None else "none"


def _stop_on_non_finite(r: _Run, m: dict, step: int) -> None:
    """Before anything of this step is saved: the loss, the gradient norm and the updated parameters
    must be finite (the loss is computed before the update, so it alone cannot vouch for the state)."""
    loss, gnorm, params_ok = float(m["loss"]), float(m["grad_norm"]), bool(m["params_finite"])
    if math.isfinite(loss) and math.isfinite(gnorm) and params_ok:
        return
    what = (
        f"loss is {loss}"
        if not math.isfinite(loss)
        else f"gradient norm is {gnorm}"
        if not math.isfinite(gnorm)
        else "the updated parameters are not finite"
    )
    raise TrainingStopped(
        f"{what} at step {step}; nothing was saved for this step. Last good checkpoint: {_last_good(r)}. "
        "Lower optim.lr, raise optim.warmup_steps or check the data."
    )


def _save_failed(r: _Run, step: Optional[int], e: BaseException) -> TrainingStopped:
    where = r.out_dir / "checkpoints" / str(step) if step is not None else r.out_dir / "checkpoints"
    return TrainingStopped(
        f"saving checkpoint {where} failed: {guard.one_line(e)}. Last good checkpoint: {_last_good(r)}"
    )


def _save(r: _Run, step: int, state, first_loss: Optional[float]) -> None:
    try:
        ckpt.save(r.mngr, step, state, r.data_iter.get_state(), r.cfg, extra={"first_loss": first_loss})
        r.pending_save = step
        if not r.cfg.checkpoint.async_save:
            _check_saves(r)
    except TrainingStopped:
        raise
    except Exception as e:  # noqa: BLE001  (the previous background save or this one): one line, not ~1000
        raise _save_failed(r, r.pending_save or step, e) from None


def _check_saves(r: _Run, wait: bool = False) -> None:
    """Raise (one line) as soon as a background save has failed; `wait`: for all of them to end."""
    if r.pending_save is None:
        return
    try:
        if wait or not r.mngr.is_saving_in_progress():
            r.mngr.wait_until_finished()
            r.mngr.check_for_errors()
            r.pending_save = None
            if r.upload is not None:
                r.upload()
    except Exception as e:  # noqa: BLE001
        raise _save_failed(r, r.pending_save, e) from None


def _is_due(done: int, every: int, last: int) -> bool:
    return bool(every) and (done % every == 0 or done == last)


# ----- logging ------------------------------------------------------------------------------------


class _Logger:
    """Metrics records (metrics.jsonl + TensorBoard on process 0), throughput/MFU, the progress bar."""

    def __init__(self, r: _Run, start_step: int, first_loss: Optional[float] = None):
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
        self.t_last, self.tokens_since, self.first_loss, self.last = time.perf_counter(), 0.0, first_loss, {}

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
    first, last, local = log.first_loss, log.last, r.out_dir
    out_dir = paths.path(r.cfg.out_dir) if paths.is_remote(r.cfg.out_dir) else local.absolute()  # where it is kept
    summary = {
        "steps": r.cfg.steps,
        "first_loss": first,
        "final": last,
        "checkpoint": str(out_dir / "checkpoints"),
        "metrics": str(out_dir / "metrics.jsonl"),
    }
    if r.is_main:
        (local / "summary.json").write_text(json.dumps(summary, indent=2))
        fl = f"{first:.3f}" if first is not None else "n/a"
        ll = f"{last.get('loss', float('nan')):.3f}"
        _log(f"loss {fl} -> {ll}" + (f" (eval {last['eval_loss']:.3f})" if "eval_loss" in last else ""))
        _log(
            f"checkpoint: {summary['checkpoint']}  metrics: {summary['metrics']}  "
            f"(tensorboard --logdir {out_dir / 'tensorboard'})"
        )
        _log(f"export to Hugging Face: {r.task.export_hint(out_dir)}")
        # --text is a text input: generate adds the [Text] marker itself
        _log(f'generate: python -m spiritlm_jax.generate --checkpoint {out_dir} --text "hello" --max-new-tokens 20')
    return summary


# ----- the run ------------------------------------------------------------------------------------


def run(cfg: TrainConfig, task: Task = LM_TASK) -> dict:
    """Train according to `cfg` (and `task`: LM pretraining by default). Returns a summary dict (also
    printed and written to summary.json); with compile.topology set, only compiles the step for that pod
    and returns the report (aot.py).

    Process 0 owns the run directory for the whole run (`locking.lock_dir`): a second job on the
    same `out_dir` is refused before it writes anything."""
    if cfg.compile.topology:  # compile only (aot.py): no devices, data, weights or run directory are touched
        return aot.compile_for_topology(cfg.compile, lambda devs, hosts: _compile_target(cfg, task, devs, hosts), _log)
    maybe_initialize_distributed(cfg.distributed)
    if paths.is_remote(cfg.out_dir) and jax.process_count() > 1:
        raise ConfigError(f"out_dir {cfg.out_dir}: a run directory on a bucket is for single-host runs (remote_run)")
    owner = lock_dir(cfg.out_dir, "run directory") if jax.process_index() == 0 else contextlib.nullcontext()
    with owner, quiet_orbax_errors(), staged(cfg.out_dir) as (out_dir, upload):
        r = _set_up(cfg, out_dir, upload, task)
        try:
            return _run(r)
        finally:
            guard.close_quietly(r.mngr)


def _run(r: _Run) -> dict:
    cfg = r.cfg
    state, start_step, first_loss = _initial_state(r)
    if start_step == cfg.steps:
        return _finished(r)
    with activation_sharding(r.mesh):
        train_step = _jit_train_step(cfg, r.task, r.model, r.tx, r.shardings, r.mesh, r.frozen_shardings)
        eval_model = r.model if r.task.eval_model is None else r.task.eval_model(cfg)
        eval_step = jit_eval_step(make_eval_step(eval_model), r.shardings, r.mesh, r.frozen_shardings)
        frozen = () if r.frozen is None else (r.frozen,)
        bsh = batch_sharding(r.mesh)
        eval_batches = r.task.eval_batches(cfg, cfg.eval_batches, jax.process_index(), jax.process_count())
        log = _Logger(r, start_step, first_loss)
        for step in range(start_step, cfg.steps):
            state, m = train_step(state, _global_batch(_next_batch(r, step + 1), bsh), *frozen)
            m = jax.device_get(m)
            loss = float(m["loss"])
            done = step + 1
            _check_saves(r)
            _stop_on_non_finite(r, m, done)
            log.step(m, loss)
            if _is_due(done, cfg.log_every, cfg.steps):
                log.record(done, m, loss)
            if eval_batches and _is_due(done, cfg.eval_every, cfg.steps):
                log.record_eval(done, _evaluate(eval_step, state["params"], eval_batches, bsh, r.frozen))
            if _is_due(done, cfg.checkpoint.every, cfg.steps):
                _save(r, done, state, log.first_loss)
        log.close()
        _check_saves(r, wait=True)
    return _summary(r, log)


def report_errors(train: Callable, cfg) -> int:
    """The exit code of `train(cfg)` for a command line (train, finetune): errors in one line on stderr;
    1 when training stopped, 2 for a config or run-directory error."""
    try:
        with quiet_orbax_errors(permanent=True):  # a failed save is reported in one line
            train(cfg)
    except TrainingStopped as e:
        print(f"training stopped: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except DirLocked as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # writing the run directory failed (e.g. a full disk): one line
        where = f" ({e.filename})" if e.filename else ""
        print(f"training stopped: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    return 0


def _finished(r: _Run) -> dict:
    """A rerun of a finished run: nothing to train; its summary.json is kept (rebuilt if missing)."""
    path = r.out_dir / "summary.json"
    summary = guard.read_json(path)
    _log(f"{r.out_dir} already finished at step {r.cfg.steps}: nothing to train")
    if summary is None:
        metrics = r.out_dir / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        records = [json.loads(ln) for ln in lines if ln.strip()]
        final = {k: v for rec in records if rec.get("step") == r.cfg.steps for k, v in rec.items() if k != "step"}
        meta = ckpt.read_meta(r.out_dir / "checkpoints", r.cfg.steps)
        summary = _summary(r, types.SimpleNamespace(first_loss=meta.get("first_loss"), last=final))
    return summary
