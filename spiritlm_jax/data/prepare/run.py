"""The driver: `prepare(cfg)` plans the units, skips the finished ones, runs the rest in this process
or in spawned workers (progress bar, done-list), then writes bad_files.jsonl, tokenizer.model and the
corpus.json summary."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import sentencepiece as spm
from tqdm import tqdm

from spiritlm_jax.data.prepare.config import PrepareConfig
from spiritlm_jax.data.prepare.encode import UnitWorker
from spiritlm_jax.data.prepare.plan import STATE_DIR, Unit, plan_units, start_state
from spiritlm_jax.data.sources import KINDS

_WORKER: Optional[UnitWorker] = None
_WORKER_ERROR: Optional[Exception] = None


def _init_worker(cfg: PrepareConfig) -> None:
    # an exception escaping a Pool initializer makes the pool restart the worker forever: keep it
    # and raise it from the first task instead, so it reaches the parent
    global _WORKER, _WORKER_ERROR
    try:
        _WORKER = UnitWorker(cfg)
    except Exception as e:  # noqa: BLE001 (re-raised in _run_in_worker)
        _WORKER_ERROR = e


def _run_in_worker(args: tuple[Unit, str]) -> dict:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    unit, out = args
    return _WORKER.run(unit, Path(out))


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
    if tokenizer is not None and cfg.workers:
        raise ValueError("a tokenizer object can only be used with workers=0 (workers build theirs from cfg.tokenizer)")
    if cfg.sp_model and not Path(cfg.sp_model).is_file():
        raise FileNotFoundError(f"sp_model {cfg.sp_model} does not exist")
    out = Path(cfg.out)
    units, plan_bad, plan = plan_units(cfg)
    out.mkdir(parents=True, exist_ok=True)
    done = start_state(cfg, out, plan)
    todo = [u for u in units if u.name not in done]
    n_files = sum(len(u.items) for u in todo if u.name.startswith("audio-"))
    bar = None
    if cfg.progress:
        bar = tqdm(total=len(units), initial=len(units) - len(todo), desc="prepare", unit="shard")
    done_file = (out / STATE_DIR / "done.jsonl").open("a")
    t0 = time.perf_counter()

    def record(rec: dict) -> None:
        done[rec["unit"]] = rec
        done_file.write(json.dumps(rec) + "\n")
        done_file.flush()
        os.fsync(done_file.fileno())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(bad=sum(len(r["bad"]) for r in done.values()))
        if on_unit_done is not None:
            on_unit_done(rec)

    try:
        if cfg.workers == 0 or not todo:
            if todo:
                need_speech = any(u.name.startswith("audio-") for u in todo)
                worker = UnitWorker(
                    cfg if need_speech else dataclasses.replace(cfg, manifest=(), audio_dir=()), tokenizer
                )
                for u in todo:
                    record(worker.run(u, out))
        else:
            with mp.get_context("spawn").Pool(min(cfg.workers, len(todo)), _init_worker, (cfg,)) as pool:
                for rec in pool.imap_unordered(_run_in_worker, [(u, str(out)) for u in todo]):
                    record(rec)
    finally:
        done_file.close()
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0

    bad = plan_bad + [b for name in plan["units"] for b in done[name]["bad"]]
    with open(out / "bad_files.jsonl", "w") as f:
        for b in bad:
            f.write(json.dumps(b, ensure_ascii=False) + "\n")
    text_vocab = None
    if cfg.sp_model:
        if Path(cfg.sp_model).resolve() != (out / "tokenizer.model").resolve():
            shutil.copyfile(cfg.sp_model, out / "tokenizer.model")
        text_vocab = spm.SentencePieceProcessor(model_file=str(cfg.sp_model)).get_piece_size()
    expressive = any(
        "pitch" in done[u].get("streams", ()) or "style" in done[u].get("streams", ()) for u in plan["units"]
    )
    units_desc = next((done[u]["units"] for u in plan["units"] if done[u].get("units")), None)
    summary = summarize(cfg, plan, done, bad, units_desc, expressive, text_vocab)
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    audio_s = sum(done[u.name]["stats"].get(k, {}).get("seconds", 0.0) for u in todo for k in ("speech", "aligned"))
    summary["_run"] = {"units_done_now": len(todo), "files": n_files, "seconds": elapsed, "audio_seconds": audio_s}
    return summary
