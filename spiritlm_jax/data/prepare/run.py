"""The driver: `prepare(cfg)` plans the units, skips the finished ones, runs the rest in this process
or in spawned workers (progress bar, done-list), then writes bad_files.jsonl, tokenizer.model and the
corpus.json summary."""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Optional

import sentencepiece as spm
from tqdm import tqdm

from spiritlm_jax import paths
from spiritlm_jax.data.prepare.config import PrepareConfig
from spiritlm_jax.data.prepare.encode import UnitWorker
from spiritlm_jax.data.prepare.plan import DONE_DIR, STATE_DIR, Unit, changed_audio, plan_units, read_done, start_state
from spiritlm_jax.data.sources import KINDS
from spiritlm_jax.locking import lock_dir

_WORKER: Optional[UnitWorker] = None
_WORKER_ERROR: Optional[Exception] = None
RUNNING_DIR = "running"  # <out>/.prepare/running/<unit>: the pid of the worker holding the unit


class PrepareFailed(RuntimeError):
    """The preparation stopped (a worker died); finished units are kept and a rerun resumes."""


def _watch_parent(parent: int) -> None:
    """A worker exits when the process that started it is gone (killed), instead of writing on."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(cfg: PrepareConfig, parent: int) -> None:
    # keep an error of the set-up and raise it from the first task, so it reaches the parent
    global _WORKER, _WORKER_ERROR
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        _WORKER = UnitWorker(cfg)
    except Exception as e:  # noqa: BLE001 (re-raised in _run_in_worker)
        _WORKER_ERROR = e


def _run_in_worker(unit: Unit, out: str) -> dict:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    mark = paths.path(out) / STATE_DIR / RUNNING_DIR / unit.name
    mark.write_text(str(os.getpid()))
    try:
        return _WORKER.run(unit, paths.path(out))
    finally:
        mark.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_units(out: Path) -> list[str]:
    """Units whose worker died while holding them (their running mark names a dead pid)."""
    running = out / STATE_DIR / RUNNING_DIR
    dead = []
    for mark in sorted(running.iterdir()) if running.is_dir() else []:
        try:
            alive = _pid_alive(int(mark.read_text() or 0))
        except (OSError, ValueError):
            alive = False
        if not alive:
            dead.append(mark.name)
    return dead


def _run_in_pool(cfg: PrepareConfig, out: Path, todo: list[Unit], record: Callable[[dict], None]) -> None:
    """Units in spawned worker processes. A worker that dies (OOM killer, kill -9) breaks the pool:
    the units it held are named in a PrepareFailed, never a hang; the finished ones are recorded."""
    running = out / STATE_DIR / RUNNING_DIR
    _remove_tree(running)
    running.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(min(cfg.workers, len(todo)), ctx, _init_worker, (cfg, os.getpid()))
    try:
        futures = {pool.submit(_run_in_worker, u, str(out)): u for u in todo}
        broken = None
        for fut in as_completed(futures):
            try:
                rec = fut.result()
            except BrokenProcessPool as e:
                broken = e
                continue
            record(rec)
        if broken is not None:
            dead = _dead_units(out) or [u.name for f, u in futures.items() if f.exception() is not None]
            raise PrepareFailed(
                f"a worker process died (killed, e.g. by the out-of-memory killer) while preparing "
                f"{', '.join(dead)}; the finished units are kept: rerun the same command to resume "
                "(fewer --workers or a smaller --batch-size need less memory)"
            )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _remove_tree(running)


def _remove_tree(p) -> None:
    if paths.path(p).exists():
        paths.path(p).rmtree()


def write_outputs(cfg: PrepareConfig, out: Path, plan: dict, plan_bad: list[dict], done: dict[str, dict]) -> dict:
    """bad_files.jsonl, tokenizer.model (a copy of sp_model) and corpus.json from the done records
    of every unit of the plan: the end of a preparation, whichever runner did the units."""
    bad = plan_bad + [b for name in plan["units"] for b in done[name]["bad"]]
    paths.write_file(out / "bad_files.jsonl", "".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bad))
    text_vocab = None
    if cfg.sp_model:
        model = paths.path(cfg.sp_model).read_bytes()
        if paths.resolved(cfg.sp_model) != paths.resolved(out / "tokenizer.model"):
            paths.write_file(out / "tokenizer.model", model)
        text_vocab = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    expressive = any(
        "pitch" in done[u].get("streams", ()) or "style" in done[u].get("streams", ()) for u in plan["units"]
    )
    units_desc = next((done[u]["units"] for u in plan["units"] if done[u].get("units")), None)
    summary = summarize(cfg, plan, done, bad, units_desc, expressive, text_vocab)
    paths.write_file(out / "corpus.json", json.dumps(summary, indent=2) + "\n")
    return summary


def write_done_marker(out, rec: dict) -> None:
    """`.prepare/done/<unit>.json`, written whole after the unit's shards: safe for many workers."""
    paths.write_file(out / STATE_DIR / DONE_DIR / f"{rec['unit']}.json", json.dumps(rec))


# The Beam runner (cfg.runner == "beam"): these module-level functions are what Beam's workers run;
# they call the same UnitWorker, shard writer and write_outputs as the local runner.


def _beam_runner():
    """spiritlm_jax.beam_runner (the [beam] extra: imported only for runner=beam), or a usage error."""
    try:
        from spiritlm_jax import beam_runner
    except ImportError as e:
        raise ValueError(f"runner=beam needs Apache Beam ({e}): pip install 'spiritlm_jax[beam]'") from None
    return beam_runner


def _beam_worker(cfg: PrepareConfig) -> UnitWorker:
    return UnitWorker(cfg)


def _beam_unit(worker: UnitWorker, unit: Unit, out: str) -> tuple[dict, list[dict]]:
    """One unit: its shards (atomic), then its done marker (atomic): a rerun skips it from then on."""
    rec = worker.run(unit, paths.path(out))
    write_done_marker(paths.path(out), rec)
    return {k: v for k, v in rec.items() if k != "bad"}, rec["bad"]


def _beam_where(worker: UnitWorker, unit: Unit) -> str:
    return f"unit {unit.name}, at {worker.current or '?'}"


def _beam_finish(
    records: list[dict],
    bads: dict[int, list[dict]],
    cfg: PrepareConfig,
    out: str,
    plan: dict,
    plan_bad: list[dict],
    done: dict[str, dict],
    todo: list[str],
) -> None:
    """The end step of the pipeline: done records of earlier runs + this run's records with their
    bad inputs (the side output) -> write_outputs."""
    done = dict(done)
    for rec in records:
        done[rec["unit"]] = {**rec, "bad": bads.get(todo.index(rec["unit"]), [])}
    write_outputs(cfg, paths.path(out), plan, plan_bad, done)


def _run_on_beam(
    cfg: PrepareConfig, out: Path, todo: list[Unit], units: list[Unit], plan: dict, plan_bad: list, done: dict
) -> None:
    beam_runner = _beam_runner()
    markers = out / STATE_DIR / DONE_DIR
    markers.mkdir(parents=True, exist_ok=True)
    names = [u.name for u in todo]
    progress = None
    if cfg.progress:
        before = len(units) - len(todo)
        progress = (
            lambda: before + len(set(names) & {p.stem for p in markers.glob("*.json")}),
            len(units),
            before,
            "prepare",
        )
    finish = functools.partial(_beam_finish, cfg=cfg, out=str(out), plan=plan, plan_bad=plan_bad, done=done, todo=names)
    try:
        beam_runner.run_units(
            todo,
            functools.partial(_beam_worker, cfg),
            functools.partial(_beam_unit, out=str(out)),
            _beam_where,
            finish,
            cfg.beam_option,
            cfg.workers,
            progress,
        )
    except beam_runner.UnitFailed as e:
        raise PrepareFailed(f"{e}; the finished units are kept: rerun the same command to resume") from None


def summarize(
    cfg: PrepareConfig,
    plan: dict,
    done: dict[str, dict],
    bad: list[dict],
    units_desc: str,
    expressive: bool,
    text_vocab_size: Optional[int],
) -> dict:
    """The corpus.json summary, summed over the done records of the plan's units."""
    kinds = {
        k: {"examples": 0, "seconds": 0.0, "speech_tokens": 0, "text_tokens": 0, "words": 0, "frames": 0} for k in KINDS
    }
    shards: dict[str, list] = {k: [] for k in KINDS}
    for name in plan["units"]:
        rec = done[name]
        for kind, st in rec["stats"].items():
            for key, v in st.items():
                kinds[kind][key] += v
        for kind, path in rec["shards"].items():
            shards[kind].append(path)
    text_counted = cfg.sp_model is not None
    summary = {
        "counts": {k: kinds[k]["examples"] for k in KINDS},
        "hours": {k: kinds[k]["seconds"] / 3600 for k in ("speech", "aligned")},
        "tokens": {
            "text": kinds["text"]["text_tokens"] if text_counted else None,
            "speech": kinds["speech"]["speech_tokens"],
            "aligned": {
                "speech": kinds["aligned"]["speech_tokens"],
                "text": kinds["aligned"]["text_tokens"] if text_counted else None,
            },
        },
        "tokens_note": "speech: HuBERT (+pitch/style) units after per-stream dedup and merge, no markers; "
        "text: SentencePiece pieces, no BOS/EOS/markers (null without sp_model)",
        "words": {"text": kinds["text"]["words"], "aligned": kinds["aligned"]["words"]},
        "frames": {"speech": kinds["speech"]["frames"], "aligned": kinds["aligned"]["frames"]},
        "bad_files": len(bad),
        "shards": shards,
        "units": {"tokenizer": cfg.tokenizer, "description": units_desc},
        "layout": {"expressive": expressive, **({"text_vocab_size": text_vocab_size} if text_vocab_size else {})},
        "format": cfg.format,
        "plan": plan["hash"],
    }
    return summary


def prepare(cfg: PrepareConfig, tokenizer=None, on_unit_done: Optional[Callable[[dict], None]] = None) -> dict:
    """Run (or resume) a preparation; returns the corpus.json summary. `tokenizer`: an object to use
    instead of cfg.tokenizer (in-process only). `on_unit_done(record)`: called after each unit is
    recorded as done (progress hooks, tests)."""
    if tokenizer is not None and (cfg.workers or cfg.runner != "local"):
        raise ValueError(
            "a tokenizer object can only be used with workers=0 and runner=local (workers build theirs from "
            "cfg.tokenizer)"
        )
    if cfg.sp_model:
        check_sp_model(cfg.sp_model)
    if cfg.runner == "beam":
        _beam_runner()  # before anything is written
    out = paths.path(cfg.out)
    with lock_dir(out, "prepared corpus"):  # one preparation per output directory
        return _prepare(cfg, out, tokenizer, on_unit_done)


def check_sp_model(path: str) -> None:
    """A clear error (naming the file) for an sp_model that is missing or not a SentencePiece model."""
    if not paths.path(path).is_file():
        raise FileNotFoundError(f"sp_model {path} does not exist")
    try:
        spm.SentencePieceProcessor(model_proto=paths.path(path).read_bytes())
    except (RuntimeError, OSError) as e:
        raise ValueError(f"sp_model {path} is not a SentencePiece model ({str(e).strip().splitlines()[-1]})") from None


def _prepare(cfg: PrepareConfig, out: Path, tokenizer, on_unit_done) -> dict:
    units, plan_bad, plan = plan_units(cfg)
    done = start_state(cfg, out, plan)
    for name in sorted(done):
        changed = changed_audio(done[name])
        if changed:
            print(f"{name}: {changed[0]} changed since it was prepared (size or time); preparing it again")
            del done[name]
    todo = [u for u in units if u.name not in done]
    n_files = sum(len(u.items) for u in todo if u.name.startswith("audio-"))
    bar = None
    if cfg.progress and cfg.runner != "beam":  # Beam's progress: run_units polls the done markers
        bar = tqdm(total=len(units), initial=len(units) - len(todo), desc="prepare", unit="shard")
    # the done-list: appended here when out/ is local; on a bucket (no appends) one marker per unit
    done_file = None if paths.is_remote(out) else (out / STATE_DIR / "done.jsonl").open("a")
    t0 = time.perf_counter()

    def record(rec: dict) -> None:
        done[rec["unit"]] = rec
        if done_file is None:
            write_done_marker(out, rec)
        else:
            done_file.write(json.dumps(rec) + "\n")
            done_file.flush()
            os.fsync(done_file.fileno())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(bad=sum(len(r["bad"]) for r in done.values()))
        if on_unit_done is not None:
            on_unit_done(rec)

    try:
        if cfg.runner == "beam":
            _run_on_beam(cfg, out, todo, units, plan, plan_bad, done)
            done.update(read_done(out / STATE_DIR / "done.jsonl"))
        elif cfg.workers == 0 or not todo:
            if todo:
                need_speech = any(u.name.startswith("audio-") for u in todo)
                worker = UnitWorker(
                    cfg if need_speech else dataclasses.replace(cfg, manifest=(), audio_dir=()), tokenizer
                )
                for u in todo:
                    record(worker.run(u, out))
        else:
            _run_in_pool(cfg, out, todo, record)
    finally:
        if done_file is not None:
            done_file.close()
        if bar is not None:
            bar.close()
    if cfg.runner == "beam":  # the pipeline's end step wrote the outputs
        summary = json.loads((out / "corpus.json").read_text())
    else:
        summary = write_outputs(cfg, out, plan, plan_bad, done)
    elapsed = time.perf_counter() - t0
    audio_s = sum(done[u.name]["stats"].get(k, {}).get("seconds", 0.0) for u in todo for k in ("speech", "aligned"))
    summary["_run"] = {"units_done_now": len(todo), "files": n_files, "seconds": elapsed, "audio_seconds": audio_s}
    return summary
