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
`batch_size` recordings; the output does not depend on their number. `runner: beam` runs the same
batches on Apache Beam (below; docs/beyond_one_machine.md) with byte-identical output.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from spiritlm_jax import paths
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
    workers: int = 0  # worker processes (spawned, or Beam's local runner processes); 0 = in this process
    runner: str = "local"  # local | beam (Apache Beam, the [beam] extra; docs/beyond_one_machine.md)
    beam_option: tuple[str, ...] = ()  # Beam pipeline option key=value (repeatable), e.g. runner=DataflowRunner
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
        if self.runner not in ("local", "beam"):
            raise ValueError(f"runner {self.runner!r} is not one of local, beam")
        if self.workers < 0 or self.batch_size < 1:
            raise ValueError("workers must be >= 0 and batch_size >= 1")


def _key(audio: str, text) -> str:
    return json.dumps([paths.resolved(audio), text])


def read_inputs(cfg: AlignConfig, out_dir: Path) -> tuple[list[dict], list[dict]]:
    """(entries {"line", "audio", "where"}, bad) of every input; `line` holds the output fields."""
    entries, bad = [], []
    for m in cfg.manifest:
        p = paths.path(m)
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
        if paths.is_remote(e["audio"]) and not paths.is_remote(a):
            e["line"]["audio"] = e["audio"]  # relative to a manifest on a bucket: written as its full URL
        elif not paths.is_remote(a) and not Path(a).is_absolute():
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
            done.add(_key(paths.join(out.parent, e["audio"]), e.get("text")))
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
    if cfg.runner == "beam":
        _beam_runner()  # before anything is written
    if paths.is_remote(cfg.out):  # appended as recordings finish: a local copy, uploaded at the end
        name = paths.path(cfg.out).name
        with lock_dir(paths.path(cfg.out).parent, "alignment output", lock_name=f".{name}.lock", shown=cfg.out):
            local = paths.cache_dir(cfg.out) / name
            local.parent.mkdir(parents=True, exist_ok=True)
            if paths.path(cfg.out).is_file():
                local.write_bytes(paths.path(cfg.out).read_bytes())
            bad = cfg.bad_files or str(paths.path(cfg.out).parent / "bad_files.jsonl")
            local_bad = local.parent / "bad_files.jsonl"
            try:
                s = _align_manifest(dataclasses.replace(cfg, out=str(local), bad_files=str(local_bad)), aligner)
            finally:
                if local.is_file():
                    paths.upload(local, cfg.out)
                if local_bad.is_file():
                    paths.upload(local_bad, bad)
            return {**s, "bad_files": bad}
    out = Path(cfg.out)
    with lock_dir(out.parent, "alignment output", lock_name=f".{out.name}.lock", shown=out):
        return _align_manifest(cfg, aligner)


def _align_manifest(cfg: AlignConfig, aligner=None) -> dict:
    if aligner is not None and (cfg.workers or cfg.runner != "local"):
        raise ValueError("an aligner object can only be used with workers=0 and runner=local")
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    entries, bad = read_inputs(cfg, out.parent)
    if cfg.overwrite and out.exists():
        out.unlink()
    done = read_done(out)
    todo = [e for e in entries if _key(e["audio"], e["line"].get("text")) not in done]
    batches = [todo[i : i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
    stats = {"aligned": 0, "kept": 0, "audio_seconds": 0.0}
    t0 = time.perf_counter()
    if cfg.runner == "beam":
        stats = _align_on_beam(cfg, out, batches, bad)
        return _summary(cfg, out, entries, todo, stats, len(bad) + stats.pop("bad"), t0)
    bar = (
        tqdm(total=len(entries), initial=len(entries) - len(todo), desc="align", unit="file") if cfg.progress else None
    )

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
    write_bad_files(cfg, out, bad)
    return _summary(cfg, out, entries, todo, stats, len(bad), t0)


def _bad_path(cfg: AlignConfig, out: Path) -> Path:
    return Path(cfg.bad_files) if cfg.bad_files else out.parent / "bad_files.jsonl"


def write_bad_files(cfg: AlignConfig, out: Path, bad: list[dict]) -> None:
    with open(_bad_path(cfg, out), "w", encoding="utf-8") as f:
        for b in bad:
            f.write(json.dumps(b, ensure_ascii=False) + "\n")


def _summary(cfg: AlignConfig, out: Path, entries: list, todo: list, stats: dict, n_bad: int, t0: float) -> dict:
    return {
        "entries": len(entries),
        "already_done": len(entries) - len(todo),
        **stats,
        "bad": n_bad,
        "bad_files": str(_bad_path(cfg, out)),
        "seconds": time.perf_counter() - t0,
    }


# The Beam runner (cfg.runner == "beam"): each batch's results go to a part file
# `.<out>.parts/<batch>.json` (written whole: a rerun after a kill skips the batches that have one);
# the pipeline's end step appends the batches' lines to `out` in input order and writes
# bad_files.jsonl. Workers run the same BatchWorker as the local runner.


def _parts_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.parts"


def _batch_name(i: int, batch: list[dict]) -> str:
    keys = json.dumps([_key(e["audio"], e["line"].get("text")) for e in batch])
    return f"{i:06d}-{hashlib.sha256(keys.encode()).hexdigest()[:12]}"


def _beam_runner():
    """spiritlm_jax.beam_runner (the [beam] extra: imported only for runner=beam), or a usage error."""
    try:
        from spiritlm_jax import beam_runner
    except ImportError as e:
        raise ValueError(f"runner=beam needs Apache Beam ({e}): pip install 'spiritlm_jax[beam]'") from None
    return beam_runner


def _beam_worker(spec: str, star: str) -> BatchWorker:
    return BatchWorker(spec, star)


def _beam_batch(worker: BatchWorker, item: tuple[str, list[dict]], parts: str) -> tuple[dict, list[dict]]:
    name, batch = item
    results = worker.run(batch)
    part = Path(parts) / f"{name}.json"
    tmp = part.parent / f".{part.name}.{os.getpid()}.partial"
    tmp.write_text(json.dumps(results, ensure_ascii=False))
    os.replace(tmp, part)
    return {"batch": name, "results": [r for r in results if "bad" not in r]}, [r["bad"] for r in results if "bad" in r]


def _beam_where(worker: BatchWorker, item: tuple[str, list[dict]]) -> str:
    name, batch = item
    return f"batch {name} ({batch[0]['where']} .. {batch[-1]['where']})"


def _beam_finish(
    records: list[dict],
    bads: dict[int, list],
    cfg: AlignConfig,
    out: str,
    names: list[str],
    running: list[str],
    bad: list[dict],
) -> None:
    """The end step: every batch's lines appended to out in input order (this run's from the main
    output, earlier runs' from their part files); bad_files.jsonl = the inputs' bads + the batches'
    (this run's from the side output)."""
    out_p = Path(out)
    fresh = {r["batch"]: r["results"] for r in records}
    bad = list(bad)
    with open(out_p, "a", encoding="utf-8") as f:
        for name in names:
            if name in fresh:
                results = fresh[name]
                bad += bads.get(running.index(name), [])
            else:
                results = json.loads((_parts_dir(out_p) / f"{name}.json").read_text())
                bad += [r["bad"] for r in results if "bad" in r]
            for r in results:
                if "bad" not in r:
                    f.write(json.dumps(r["line"], ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    write_bad_files(cfg, out_p, bad)


def _align_on_beam(cfg: AlignConfig, out: Path, batches: list[list[dict]], bad: list[dict]) -> dict:
    """Run the batches on Beam (skipping those with a part file from a killed run); returns the
    stats of all batches ("aligned", "kept", "audio_seconds", "bad")."""
    beam_runner = _beam_runner()

    parts = _parts_dir(out)
    parts.mkdir(parents=True, exist_ok=True)
    names = [_batch_name(i, b) for i, b in enumerate(batches)]
    for p in parts.iterdir():  # parts of another plan (the output changed since) or cut writes
        if p.suffix != ".json" or p.stem not in names:
            p.unlink()
    have = {p.stem for p in parts.glob("*.json")}
    units = [(n, b) for n, b in zip(names, batches) if n not in have]
    progress = None
    if cfg.progress:
        progress = (lambda: len(list(parts.glob("*.json"))), len(batches), len(batches) - len(units), "align")
    finish = functools.partial(_beam_finish, cfg=cfg, out=str(out), names=names, running=[n for n, _ in units], bad=bad)
    try:
        beam_runner.run_units(
            units,
            functools.partial(_beam_worker, cfg.aligner, cfg.star),
            functools.partial(_beam_batch, parts=str(parts)),
            _beam_where,
            finish,
            cfg.beam_option,
            cfg.workers,
            progress,
        )
    except beam_runner.UnitFailed as e:
        raise AlignFailed(f"{e}; the finished batches are kept: rerun the same command to resume") from None
    stats = {"aligned": 0, "kept": 0, "audio_seconds": 0.0, "bad": 0}
    for name in names:
        for r in json.loads((parts / f"{name}.json").read_text()):
            if "bad" in r:
                stats["bad"] += 1
            else:
                stats["kept" if r.get("kept") else "aligned"] += 1
                stats["audio_seconds"] += r["seconds"]
    shutil.rmtree(parts)
    return stats


class AlignFailed(RuntimeError):
    """A Beam alignment stopped on an error; finished batches are kept and a rerun resumes."""
