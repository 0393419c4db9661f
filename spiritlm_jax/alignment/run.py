"""`align_manifest(cfg)`: the driver of `python -m spiritlm_jax.align` (docs/alignment.md).

Inputs: JSONL manifests (`audio` + `text`, other fields kept) and audio folders (alignment.manifest).
Output (`out`, JSONL): each input line with `"words": [[word, start_s, end_s], ...]` added (an entry
that already has `words`, or has no `text`, is copied unchanged: prepare makes the latter a
speech-only example); relative audio paths are rewritten relative to the
output's folder. Lines are written (flushed, fsynced) as recordings finish, in input order.
Resume: a rerun skips the recordings already in `out` (same audio and text) and appends the rest;
a line cut by an interruption is dropped first. `overwrite` starts over.
Bad inputs (not JSON, no audio, no text, unreadable audio, an alignment failure) are reported in
`bad_files.jsonl` (one {"path", "reason", "entry"} each) and never stop the run.
Workers (`workers` > 0): spawned processes, each with its own aligner, taking batches of
`batch_size` recordings; the output does not depend on their number.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from spiritlm_jax.alignment import load_aligner
from spiritlm_jax.alignment.base import AlignmentError, align_many
from spiritlm_jax.alignment.manifest import read_lines, scan_audio_dir
from spiritlm_jax.locking import lock_dir
from spiritlm_jax.speech.audio import SAMPLE_RATE, load_audio


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    out: str = ""  # output JSONL: the input lines with "words" (required)
    manifest: tuple[str, ...] = ()  # JSONL manifests with audio and text (repeat --manifest for several)
    audio_dir: tuple[str, ...] = ()  # folders of x.wav|x.flac + x.txt, or LibriSpeech *.trans.txt (repeatable)
    aligner: str = "pocketsphinx"  # pocketsphinx | pocketsphinx:DICT | ctc:DIR (converted wav2vec2 CTC model)
    star: str = "none"  # ctc only: none | edges (a star token before and after the transcript, as MMS)
    workers: int = 0  # spawned worker processes; 0 = in this process
    batch_size: int = 8  # recordings per aligner call (the CTC aligner batches them)
    bad_files: Optional[str] = None  # bad-input report (default: bad_files.jsonl beside out)
    overwrite: bool = False  # start over instead of resuming from the lines already in out
    progress: bool = True  # show a progress bar (--no-progress to hide it)

    def __post_init__(self):
        if not self.out:
            raise ValueError("out (the output JSONL) is required")
        if not self.manifest and not self.audio_dir:
            raise ValueError("nothing to align: give a manifest or an audio folder")
        kind = self.aligner.partition(":")[0]
        if kind not in ("pocketsphinx", "ctc") or (kind == "ctc" and not self.aligner[4:]):
            raise ValueError(f"aligner {self.aligner!r}: expected pocketsphinx, pocketsphinx:DICT or ctc:DIR")
        if self.star not in ("none", "edges"):
            raise ValueError(f"star must be none or edges, got {self.star!r}")
        if self.workers < 0 or self.batch_size < 1:
            raise ValueError("workers must be >= 0 and batch_size >= 1")


def _key(audio: str, text) -> str:
    return json.dumps([str(Path(audio).resolve()), text])


def read_inputs(cfg: AlignConfig, out_dir: Path) -> tuple[list[dict], list[dict]]:
    """(entries {"line", "audio", "where"}, bad) of every input; `line` holds the output fields."""
    entries, bad = [], []
    for m in cfg.manifest:
        p = Path(m)
        if not p.is_file():
            raise FileNotFoundError(f"manifest {p} does not exist")
        e, b = read_lines(p)
        entries += e
        bad += b
    for d in cfg.audio_dir:
        e, b = scan_audio_dir(d)
        entries += [{"line": dict(x), "audio": x["audio"], "where": f"{d}:{x['id']}"} for x in e]
        bad += b
    for e in entries:
        a = e["line"]["audio"]
        if not Path(a).is_absolute():
            e["line"]["audio"] = os.path.relpath(Path(e["audio"]).resolve(), out_dir.resolve())
    return entries, bad


def read_done(out: Path) -> set[str]:
    """Keys of the lines already in `out`; a trailing line cut by an interruption is removed."""
    if not out.is_file():
        return set()
    data = out.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        out.write_bytes(keep)
    done = set()
    for line in keep.decode("utf-8").splitlines():
        try:
            e = json.loads(line)
            a = Path(e["audio"])
            done.add(_key(str(a if a.is_absolute() else out.parent / a), e.get("text")))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return done


class BatchWorker:
    def __init__(self, spec: str, star: str = "none", aligner=None):
        self.aligner = aligner if aligner is not None else load_aligner(spec, star)

    def run(self, batch: list[dict]) -> list[dict]:
        """Per entry: {"line": output line} or {"bad": record}, plus "seconds" of audio."""
        results: list[Optional[dict]] = [None] * len(batch)
        items, where = [], []
        for i, e in enumerate(batch):
            line = e["line"]
            try:
                if "words" in line or line.get("text") is None or line.get("text") == "":
                    results[i] = {"line": line, "seconds": 0.0, "kept": True}  # nothing to align: copied
                    continue
                if not isinstance(line["text"], str):
                    raise ValueError("'text' must be a string")
                wav = load_audio(e["audio"])
                if not len(wav):
                    raise ValueError("empty audio")
            except (ValueError, FileNotFoundError) as err:
                results[i] = {"bad": {"path": e["audio"], "reason": str(err), "entry": e["where"]}}
                continue
            items.append((wav, line["text"]))
            where.append(i)
        for i, (wav, _), words in zip(where, items, align_many(self.aligner, items) if items else []):
            e = batch[i]
            if isinstance(words, AlignmentError):
                results[i] = {"bad": {"path": e["audio"], "reason": f"alignment failed: {words}", "entry": e["where"]}}
            else:
                results[i] = {"line": {**e["line"], "words": words}, "seconds": len(wav) / SAMPLE_RATE}
        return results


_WORKER: Optional[BatchWorker] = None
_WORKER_ERROR: Optional[Exception] = None


def _init_worker(spec: str, star: str) -> None:
    global _WORKER, _WORKER_ERROR
    try:
        _WORKER = BatchWorker(spec, star)
    except Exception as e:  # noqa: BLE001 (re-raised from the first task)
        _WORKER_ERROR = e


def _run_in_worker(batch: list[dict]) -> list[dict]:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    return _WORKER.run(batch)


def align_manifest(cfg: AlignConfig, aligner=None) -> dict:
    """Align (or resume aligning) every input; returns a summary {"entries", "aligned", "kept",
    "already_done", "bad", "seconds", "audio_seconds", "bad_files"}. `aligner`: an object to use
    instead of cfg.aligner (in-process only). One job per output: a second one on the same --out
    is refused (`locking.DirLocked`) before anything is read or written."""
    out = Path(cfg.out)
    with lock_dir(out.parent, "alignment output", lock_name=f".{out.name}.lock", shown=out):
        return _align_manifest(cfg, aligner)


def _align_manifest(cfg: AlignConfig, aligner=None) -> dict:
    if aligner is not None and cfg.workers:
        raise ValueError("an aligner object can only be used with workers=0")
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    entries, bad = read_inputs(cfg, out.parent)
    if cfg.overwrite and out.exists():
        out.unlink()
    done = read_done(out)
    todo = [e for e in entries if _key(e["audio"], e["line"].get("text")) not in done]
    batches = [todo[i : i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
    stats = {"aligned": 0, "kept": 0, "audio_seconds": 0.0}
    bar = (
        tqdm(total=len(entries), initial=len(entries) - len(todo), desc="align", unit="file") if cfg.progress else None
    )
    t0 = time.perf_counter()

    def record(results: list[dict], f) -> None:
        for r in results:
            if "bad" in r:
                bad.append(r["bad"])
            else:
                f.write(json.dumps(r["line"], ensure_ascii=False) + "\n")
                stats["kept" if r.get("kept") else "aligned"] += 1
                stats["audio_seconds"] += r["seconds"]
        f.flush()
        os.fsync(f.fileno())
        if bar is not None:
            bar.update(len(results))
            bar.set_postfix(bad=len(bad))

    try:
        with open(out, "a", encoding="utf-8") as f:
            if batches and cfg.workers == 0:
                worker = BatchWorker(cfg.aligner, cfg.star, aligner)
                for b in batches:
                    record(worker.run(b), f)
            elif batches:
                with mp.get_context("spawn").Pool(
                    min(cfg.workers, len(batches)), _init_worker, (cfg.aligner, cfg.star)
                ) as pool:
                    for res in pool.imap(_run_in_worker, batches):
                        record(res, f)
    finally:
        if bar is not None:
            bar.close()
    bad_path = Path(cfg.bad_files) if cfg.bad_files else out.parent / "bad_files.jsonl"
    with open(bad_path, "w", encoding="utf-8") as f:
        for b in bad:
            f.write(json.dumps(b, ensure_ascii=False) + "\n")
    return {
        "entries": len(entries),
        "already_done": len(entries) - len(todo),
        **stats,
        "bad": len(bad),
        "bad_files": str(bad_path),
        "seconds": time.perf_counter() - t0,
    }
