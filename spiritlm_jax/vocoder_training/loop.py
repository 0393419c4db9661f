"""The vocoder training loop: `run(cfg)` (python -m spiritlm_jax.train_vocoder).

Run directory (`out_dir`, owned by one process for the whole run: `locking.lock_dir`):

    config.yaml            the resolved VocoderTrainConfig
    checkpoints/<step>/    Orbax: state (generator (weight-normed), discriminators, spectral-norm
                           vectors, both AdamW states), data ({"step", "seed"}: the sampler is a
                           function of the step), meta (the config)
    vocoder/               the generator as a vocoder directory (Vocoder.load / SpiritLM), rewritten
                           at every checkpoint
    metrics.jsonl, tensorboard/ (losses, lr, validation mel error, audio samples, mel images), summary.json

Re-running the same command resumes from the latest checkpoint (every state above restored, the
same batches follow: exact, tested by SIGKILL). A changed architecture (model, discriminators, mel)
is refused on resume; `checkpoint.resume=false` on a directory with checkpoints is refused too
(choose another out_dir). A non-finite loss stops the run before anything is saved for that step.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from spiritlm_jax.config import ConfigError, save_config, to_dict
from spiritlm_jax.locking import lock_dir
from spiritlm_jax.speech.vocoder import Vocoder
from spiritlm_jax.vocoder_training import data as vdata
from spiritlm_jax.vocoder_training import step as vstep
from spiritlm_jax.vocoder_training import weight_norm as wn
from spiritlm_jax.vocoder_training.config import VocoderTrainConfig

CHECKPOINTS, VOCODER_DIR = "checkpoints", "vocoder"
ITEMS = ("state", "data", "meta")
ARCH_KEYS = ("model", "discriminators", "mel")  # what a resumed run must keep


class VocoderTrainingStopped(RuntimeError):
    """A non-finite loss: the run stopped, the last good checkpoint is kept."""


def _manager(out_dir: Path, keep: int) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager((out_dir / CHECKPOINTS).absolute(), options=opts, item_names=ITEMS)


def _save(mngr, step: int, state, cfg: VocoderTrainConfig) -> None:
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"step": int(step), "seed": cfg.data.seed}),
            meta=ocp.args.JsonSave({"config": to_dict(cfg), "step": int(step)}),
        ),
    )
    mngr.wait_until_finished()


def _restore(mngr, step: int, abstract):
    out = mngr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()
        ),
    )
    return out["state"], out["data"], out["meta"]


def _check_same_architecture(meta: dict, cfg: VocoderTrainConfig, where: Path) -> None:
    now = to_dict(cfg)
    for key in ARCH_KEYS:
        if meta["config"].get(key) != now[key]:
            old, new = meta["config"].get(key) or {}, now[key]
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"{key}.{diff[0] if diff else '?'} differs from the run in {where} "
                f"({old.get(diff[0]) if diff else '?'} there, {new.get(diff[0]) if diff else '?'} now): "
                "a resumed run keeps its architecture; choose another out_dir"
            )


def export_vocoder(cfg: VocoderTrainConfig, g_params, directory: Path, speakers=None, styles=None) -> Path:
    """The generator (weight norm folded) as a vocoder directory, replacing `directory` atomically."""
    tmp = directory.with_name(directory.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    Vocoder(wn.fold(jax.device_get(g_params)), cfg.model, speakers, styles).save(tmp)
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


class _Logger:
    def __init__(self, out_dir: Path, cfg: VocoderTrainConfig, start: int):
        from tensorboardX import SummaryWriter

        self.path = out_dir / "metrics.jsonl"
        self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        self.bar = (
            tqdm(
                total=cfg.steps,
                initial=start,
                desc="train_vocoder",
                dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0,
            )
            if cfg.progress
            else None
        )
        self.last: dict = {}
        self.first: Optional[dict] = None

    def write(self, step: int, rec: dict) -> None:
        rec = {"step": int(step), **rec}
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        for k, v in rec.items():
            if k != "step" and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, step)
        self.tb.flush()
        self.last.update(rec)
        if self.first is None and "mel_l1" in rec:
            self.first = dict(rec)
        if self.bar is not None and "mel_l1" in rec:
            self.bar.set_postfix(mel=f"{rec['mel_l1']:.3f}", d=f"{rec['d_loss']:.2f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.tb.close()


def _mel_image(mel_tm: np.ndarray) -> np.ndarray:
    """[frames, mels] log-mel -> an [mels, frames] image in [0, 1], low frequencies at the bottom."""
    m = mel_tm.T[::-1]
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / max(hi - lo, 1e-6)


def evaluate(cfg: VocoderTrainConfig, g_params, utts: list, log: Optional[_Logger] = None, step: int = 0) -> float:
    """Mean log-mel L1 of held-out utterances resynthesised from their own units (ground-truth
    durations); the first two go to TensorBoard as audio and mel images."""
    voc = Vocoder(wn.fold(jax.device_get(g_params)), cfg.model)
    errs = []
    for i, u in enumerate(utts):
        kw = {} if not cfg.model.num_f0_tokens and not cfg.model.num_style_tokens else {}
        units = {k: v for k, v in u.units.items()}
        audio = voc.vocode(
            units,
            speaker=u.speaker if cfg.model.multispkr else None,
            style=u.style if cfg.model.multistyle else None,
            dur_pred=False,
            **kw,
        )
        n = min(len(audio), len(u.audio))
        real = np.asarray(vstep.log_mel(cfg, u.audio[None, :n]))[0]
        fake = np.asarray(vstep.log_mel(cfg, audio[None, :n]))[0]
        errs.append(float(np.mean(np.abs(real - fake))))
        if log is not None and i < 2:
            sr = cfg.model.sampling_rate
            log.tb.add_audio(f"eval/{i}/resynthesis", audio[:n], step, sample_rate=sr)
            log.tb.add_image(f"eval/{i}/mel_resynthesis", _mel_image(fake), step, dataformats="HW")
            if step == 0 or not getattr(log, "_real_logged", False):
                log.tb.add_audio(f"eval/{i}/original", u.audio[:n], step, sample_rate=sr)
                log.tb.add_image(f"eval/{i}/mel_original", _mel_image(real), step, dataformats="HW")
    if log is not None:
        log._real_logged = True
    return float(np.mean(errs)) if errs else float("nan")


def _data(cfg: VocoderTrainConfig):
    d = cfg.data
    if not d.manifest and not d.corpus:
        raise ConfigError(
            "data.manifest / data.corpus: give at least one JSONL manifest of recordings "
            '({"audio": path}) or prepared corpus directory (python -m spiritlm_jax.prepare)'
        )
    if cfg.model.hop != cfg.model.code_hop_size:
        raise ConfigError(f"model: prod(upsample_rates)={cfg.model.hop} but code_hop_size={cfg.model.code_hop_size}")
    entries = vdata.read_entries(d.manifest) + vdata.read_corpus(d.corpus, "train")
    eval_entries = vdata.read_entries(d.eval_manifest) + vdata.read_corpus(d.eval_corpus, "eval")
    speakers, styles = vdata.speaker_and_style_lists(entries + eval_entries, cfg.model)
    held_entries = eval_entries[: d.eval_items]
    tok = None  # corpus examples bring their units: the tokenizer only runs for manifest entries
    if any("_units" not in e for e in entries + held_entries):
        tok = vdata.make_tokenizer(d.tokenizer)
        vdata.warn_other_tokenizer(d.corpus + d.eval_corpus, d.tokenizer)
    train = vdata.load_utterances(entries, tok, cfg.model, speakers, styles)
    held = vdata.load_utterances(held_entries, tok, cfg.model, speakers, styles)
    sampler = vdata.SegmentSampler(train, cfg.model, d.segment_frames, d.batch_size, d.seed)
    return sampler, held, speakers, styles


def run(cfg: VocoderTrainConfig) -> dict:
    """Train according to `cfg` (module docstring); returns the summary (also summary.json)."""
    with lock_dir(cfg.out_dir, "vocoder run directory"):
        return _run(cfg)


def _run(cfg: VocoderTrainConfig) -> dict:
    out_dir = Path(cfg.out_dir)
    try:
        mesh = vstep.make_mesh(cfg.devices)
    except ValueError as e:
        raise ConfigError(f"devices: {e}") from None
    if cfg.data.batch_size % mesh.shape["data"]:
        raise ConfigError(f"data.batch_size {cfg.data.batch_size} must divide over {mesh.shape['data']} devices")
    mngr = _manager(out_dir, cfg.checkpoint.keep)
    latest = mngr.latest_step()
    if latest is not None and not cfg.checkpoint.resume:
        raise ConfigError(
            f"{out_dir / CHECKPOINTS} holds checkpoints (latest step {latest}) and checkpoint.resume=false; "
            "choose another out_dir or delete it"
        )
    sampler, held, speakers, styles = _data(cfg)
    tx = vstep.make_optimizer(cfg)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    if latest is not None:
        meta = mngr.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        _check_same_architecture(meta, cfg, out_dir)
        shapes = jax.eval_shape(lambda: vstep.init_state(cfg, tx))
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)
        state, data_state, _ = _restore(mngr, latest, abstract)
        start = int(data_state["step"])
        print(f"resumed from {out_dir / CHECKPOINTS} at step {start}", flush=True)
    else:
        state, start = jax.device_put(vstep.init_state(cfg, tx), rep), 0
    save_config(cfg, out_dir / "config.yaml")
    full_step, warm_step = vstep.jit_steps(cfg, tx, mesh)
    bsh = vstep.batch_sharding(mesh)
    n_g = sum(x.size for x in jax.tree.leaves(state["g"]))
    n_d = sum(x.size for x in jax.tree.leaves(state["d"]))
    print(
        f"generator {n_g / 1e6:.2f}M parameters, discriminators {n_d / 1e6:.2f}M; {len(sampler.utts)} recordings, "
        f"batch {cfg.data.batch_size} x {cfg.data.segment_frames} frames; {mesh.shape['data']} device(s)",
        flush=True,
    )
    log = _Logger(out_dir, cfg, start)
    t0, steps_timed = time.perf_counter(), 0
    for s in range(start, cfg.steps):
        batch = jax.device_put(sampler.batch(s), bsh)
        fn = full_step if s >= cfg.loss.gan_start else warm_step
        state, m = fn(state, batch)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        done = s + 1
        steps_timed += 1
        bad = [k for k, v in m.items() if not math.isfinite(v)]
        if bad:
            good = mngr.latest_step()
            last = out_dir / CHECKPOINTS / str(good) if good is not None else "none"
            raise VocoderTrainingStopped(
                f"{bad[0]} is {m[bad[0]]} at step {done}; nothing was saved for this step. "
                f"Last good checkpoint: {last}. Lower optim.lr or check the data."
            )
        if log.bar is not None:
            log.bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.steps:
            dt = time.perf_counter() - t0
            log.write(done, {**m, "lr": vstep.lr_at(cfg, s), "steps_per_s": steps_timed / max(dt, 1e-9)})
            t0, steps_timed = time.perf_counter(), 0
        if held and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            log.write(done, {"eval_mel_l1": evaluate(cfg, state["g"], held, log, done)})
        if done % cfg.checkpoint.every == 0 or done == cfg.steps:
            _save(mngr, done, state, cfg)
            export_vocoder(cfg, state["g"], out_dir / VOCODER_DIR, speakers, styles)
    log.close()
    summary = {
        "steps": cfg.steps,
        "first": log.first,
        "final": log.last,
        "vocoder": str((out_dir / VOCODER_DIR).absolute()),
        "checkpoints": str((out_dir / CHECKPOINTS).absolute()),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"vocoder: {summary['vocoder']}  (tensorboard --logdir {out_dir / 'tensorboard'})", flush=True)
    return summary


def latest_state(out_dir: str | Path) -> tuple[Any, dict]:
    """(state, meta) of a run's latest checkpoint on the host (for export)."""
    d = Path(out_dir) / CHECKPOINTS
    if not d.is_dir():
        raise FileNotFoundError(f"{d} does not exist: not a vocoder training run")
    mngr = ocp.CheckpointManager(d.absolute(), item_names=ITEMS, options=ocp.CheckpointManagerOptions(read_only=True))
    step = mngr.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {d}")
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]
