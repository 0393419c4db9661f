"""The vocoder training loop: `run(cfg)` (python -m spiritlm_jax.train_vocoder).

Run directory (`out_dir`, owned by one process for the whole run: `locking.lock_dir`):

    config.yaml            the resolved VocoderTrainConfig
    checkpoints/<step>/    Orbax: state (generator (weight-normed), discriminators, spectral-norm
                           vectors, both AdamW states), data ({"step", "seed"}: the sampler is a
                           function of the step), meta (the config)
    vocoder/               the generator as a vocoder directory (Vocoder.load / SpiritLM), rewritten
                           at every checkpoint
    metrics.jsonl, tensorboard/ (losses, lr, validation mel error, audio samples, mel images), summary.json

How a run starts and resumes is the LM trainer's policy (`run_guard`, docs/reliability.md), with
`VOCODER_POLICY` naming this trainer's files and keys: re-running the same command resumes from the
newest checkpoint that restores (every state above, the same batches follow: exact, tested by SIGKILL;
an unreadable or non-finite checkpoint is moved to broken_checkpoints/ and the previous one used);
metrics of replayed steps are dropped. A changed architecture (model, discriminators, mel) is refused;
other changes need `checkpoint.allow_changes=true` (recorded in config_changes.jsonl);
`checkpoint.resume=false` into an existing run is refused unless `checkpoint.fresh=true`. A non-finite
loss or parameter stops the run before anything is saved for that step.
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

from spiritlm_jax import aot
from spiritlm_jax import run_guard as guard
from spiritlm_jax.config import ConfigError, from_dict, save_config, to_dict
from spiritlm_jax.locking import lock_dir
from spiritlm_jax.speech.features import HOP, WINDOW, FeatureConfig
from spiritlm_jax.speech.vocoder import Vocoder
from spiritlm_jax.vocoder_training import data as vdata
from spiritlm_jax.vocoder_training import step as vstep
from spiritlm_jax.vocoder_training import weight_norm as wn
from spiritlm_jax.vocoder_training.config import VocoderTrainConfig

CHECKPOINTS, VOCODER_DIR = "checkpoints", "vocoder"
ITEMS = ("state", "data", "meta")

# This trainer's files (checkpoint.fresh=true deletes these and nothing else), the keys a resumed run
# must keep (its architecture) and those that may change without checkpoint.allow_changes (they do not
# change what a step computes; `steps` too: the learning rate depends on the step alone).
VOCODER_POLICY = guard.RunDirPolicy(
    tool_files=(CHECKPOINTS, VOCODER_DIR, "metrics.jsonl", "tensorboard", "summary.json", "config.yaml"),
    shape_keys=("model", "discriminators", "mel"),
    free_keys=(
        "steps",
        "checkpoint",
        "devices",
        "log_every",
        "eval_every",
        "out_dir",
        "progress",
        "data.eval_manifest",
        "data.eval_corpus",
        "data.eval_items",
        "compile",
    ),
    checkpoints=CHECKPOINTS,
)


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


def _log(msg: str) -> None:
    print(msg, flush=True)


def _steps_on_disk(out_dir: Path) -> list[int]:
    d = out_dir / CHECKPOINTS
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()) if d.is_dir() else []


def _last_good(mngr, out_dir: Path) -> str:
    good = mngr.latest_step()
    return str(out_dir / CHECKPOINTS / str(good)) if good is not None else "none"


def _finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(jax.device_get(tree)))


def _restore_checked(mngr, step: int, abstract, cfg: VocoderTrainConfig):
    """(state, accepted config changes) of checkpoint `step`: its config is checked against `cfg` first
    (RunDirError for another architecture or an unaccepted change); anything unreadable or a non-finite
    state raises (restore_with_fallback then moves the checkpoint aside)."""
    where = Path(cfg.out_dir) / CHECKPOINTS / str(step)
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or meta.get("step") != step:
        raise ValueError("its meta item holds no config for this step")
    saved = meta["config"]
    try:  # a key added to the schema since that run, at its default, is not a change
        saved = to_dict(from_dict(VocoderTrainConfig, saved))
    except (ConfigError, TypeError, ValueError):
        pass
    changes = guard.check_resume_config(
        saved, to_dict(cfg), VOCODER_POLICY, cfg.checkpoint.allow_changes, f"checkpoint {where}"
    )
    state, data_state, _ = _restore(mngr, step, abstract)
    if int(data_state["step"]) != step:
        raise ValueError(f"its data item says step {data_state['step']}")
    if not _finite(state):
        raise ValueError("its state is not finite")
    return state, changes


def _unit_features(cfg: VocoderTrainConfig) -> Optional[vstep.UnitFeatures]:
    """The frame features (and, for unit_consistency, the centroids) of data.tokenizer that
    loss.unit_features / loss.unit_consistency compare; None when both are off."""
    if not cfg.loss.unit_features and not cfg.loss.unit_consistency:
        return None
    tok = vdata.make_tokenizer(cfg.data.tokenizer)
    fc = getattr(getattr(tok, "features", None), "config", None)
    if not isinstance(fc, FeatureConfig):
        raise ConfigError(
            f"loss.unit_features needs a log-mel or MFCC k-means tokenizer (mel:DIR); data.tokenizer="
            f"{cfg.data.tokenizer!r} quantizes {getattr(getattr(tok, 'features', None), 'name', 'HuBERT')} features"
        )
    centroids = None
    if cfg.loss.unit_consistency:
        if fc.kind != "log_mel":
            raise ConfigError(
                f"loss.unit_consistency needs log-mel k-means units; {cfg.data.tokenizer!r} uses {fc.kind}"
            )
        centroids = np.asarray(tok.centroids, np.float32)
    return vstep.UnitFeatures(WINDOW, HOP, fc.n_mels, fc.fmin, fc.fmax, centroids, fc.cmvn)


def run(cfg: VocoderTrainConfig) -> dict:
    """Train according to `cfg` (module docstring); returns the summary (also summary.json). With
    compile.topology set, only compiles the GAN step for that pod and returns the report (aot.py)."""
    if cfg.compile.topology:
        return aot.compile_for_topology(cfg.compile, lambda devs, hosts: _compile_target(cfg, devs), _log)
    with lock_dir(cfg.out_dir, "vocoder run directory"):
        return _run(cfg)


def _mesh(cfg: VocoderTrainConfig, pool=None):
    """The data-parallel mesh (of `pool`, default all devices); data.batch_size must divide over it."""
    try:
        mesh = vstep.make_mesh(cfg.devices, pool)
    except ValueError as e:
        raise ConfigError(f"devices: {e}") from None
    if cfg.data.batch_size % mesh.shape["data"]:
        raise ConfigError(f"data.batch_size {cfg.data.batch_size} must divide over {mesh.shape['data']} devices")
    return mesh


def _compile_target(cfg: VocoderTrainConfig, pool) -> aot.Target:
    """The GAN step (the larger of the two) of a run on `pool` with abstract arguments; the batch's
    shapes come from the sampler itself, run on one silent stand-in recording (no data is read)."""
    mesh = _mesh(cfg, pool)
    uf = _unit_features(cfg)
    tx = vstep.make_optimizer(cfg)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shapes = jax.eval_shape(lambda: vstep.init_state(cfg, tx))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), shapes)
    n = cfg.data.segment_frames
    stats = np.zeros((2, uf.n_mels), np.float32) if uf is not None and uf.centroids is not None else None
    stand_in = vdata.Utterance("shape", np.zeros(n * cfg.model.hop, np.float32), {"hubert": np.zeros(n, np.int64)})
    stand_in.feat_stats = stats
    bsh = vstep.batch_sharding(mesh)
    batch = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bsh)
        for k, v in vdata.SegmentSampler([stand_in], cfg.model, n, cfg.data.batch_size, 0).batch(0).items()
    }
    return aot.Target(
        step=vstep.jit_steps(cfg, tx, mesh, uf)[0],
        args=(state, batch),
        global_batch=cfg.data.batch_size,
        seq_len=n,
        knobs="a smaller data.batch_size or data.segment_frames, or more devices",
        mesh=f"data={mesh.shape['data']}",
        mesh_devices=mesh.size,
    )


def _run(cfg: VocoderTrainConfig) -> dict:
    out_dir = Path(cfg.out_dir)
    mesh = _mesh(cfg)
    on_disk = _steps_on_disk(out_dir)
    guard.check_start(
        out_dir, VOCODER_POLICY, cfg.checkpoint.resume, cfg.checkpoint.fresh, on_disk, log=_log
    )  # before the data is loaded: a refusal costs nothing
    uf = _unit_features(cfg)
    sampler, held, speakers, styles = _data(cfg)
    if uf is not None and uf.centroids is not None:
        for u in sampler.utts:
            u.feat_stats = vdata.feature_stats(u.audio, uf.n_mels, uf.fmin, uf.fmax, uf.cmvn)
    tx = vstep.make_optimizer(cfg)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    mngr = _manager(out_dir, cfg.checkpoint.keep)
    steps = _steps_on_disk(out_dir) if cfg.checkpoint.resume and not cfg.checkpoint.fresh else []
    start, changes = 0, {}
    if steps:
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
            jax.eval_shape(lambda: vstep.init_state(cfg, tx)),
        )
        start, (state, changes) = guard.restore_with_fallback(
            out_dir / CHECKPOINTS, steps, lambda s: _restore_checked(mngr, s, abstract, cfg), VOCODER_POLICY, log=_log
        )
        mngr.reload()
        if start > cfg.steps:
            raise guard.RunDirError(
                f"{out_dir} is at step {start} already, past steps={cfg.steps}; raise steps or use a new out_dir"
            )
    else:
        state = jax.device_put(vstep.init_state(cfg, tx), rep)
    # only now: the directory never pairs a checkpoint with another run's config or metrics
    save_config(cfg, out_dir / "config.yaml")
    guard.record_changes(out_dir, start, changes)
    guard.truncate_metrics(out_dir, VOCODER_POLICY, start)
    if steps:
        _log(f"resumed from {out_dir / CHECKPOINTS} at step {start}")
        if changes:
            _log(f"config changes accepted (checkpoint.allow_changes): {guard.show_changes(changes)}")
    full_step, warm_step = vstep.jit_steps(cfg, tx, mesh, uf)
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
            raise VocoderTrainingStopped(
                f"{bad[0]} is {m[bad[0]]} at step {done}; nothing was saved for this step. "
                f"Last good checkpoint: {_last_good(mngr, out_dir)}. Lower optim.lr or check the data."
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
            if not _finite(state):  # a NaN checkpoint must never become the one a resume trusts
                raise VocoderTrainingStopped(
                    f"the training state is not finite after step {done}; nothing was saved for this step. "
                    f"Last good checkpoint: {_last_good(mngr, out_dir)}. Lower optim.lr or check the data."
                )
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
