"""Corpus preparation: a manifest of recordings (+ text files) -> prepared shards per kind.

    python -m spiritlm_jax.prepare --manifest data.jsonl --text books.txt --out corpus/ \
        --tokenizer mel:demo --sp-model tokenizer.model --workers 4

Manifest: one JSON object per line, `{"audio": path, "text"?: str, "words"?: [[word, start_s, end_s], ...],
"id"?: str, "source"?: str}`; relative audio paths are relative to the manifest's folder. An entry
with `words` becomes an aligned example, one without a speech-only example (its `text`, if any, also
becomes a text example with `transcripts_as_text`). Text files (.txt or .txt.gz): one text example per
non-empty line.

Output (`out/`): `{text,speech,aligned}/<kind>-NNNNN.array_record` (or .jsonl.gz) shards in the
example format of docs/data.md, `corpus.json` (counts, hours, tokens and words per kind, layout,
unit type), `bad_files.jsonl` (one {"path", "reason", "entry"} per skipped input), `tokenizer.model`
(a copy of --sp-model), and `.prepare/` (plan and done-list, for resuming).

Work is split into units: `audio-NNNNN` (shard_size consecutive manifest entries -> one speech and one
aligned shard) and `text-NNNNN` (text_shard_size lines -> one text shard). A unit's shards are written
under temporary names and renamed, then the unit is appended to `.prepare/done.jsonl` with its
statistics and bad files. A rerun with the same inputs and settings skips done units and rewrites the
rest (a shard of an unfinished unit, complete or not, is rewritten); different inputs or settings are
an error unless `overwrite`. Workers (`workers` > 0) are spawned processes, each holding its own speech
tokenizer; a worker quantizes `batch_size` recordings per tokenizer call when the tokenizer has
`encode_units_batch`.

A bad input (missing or unreadable audio, empty or shorter than one 80 ms chunk, malformed entry,
words that are not [word, start, end] with 0 <= start <= end, starts not in order, or a word past
the end of the audio by more than `align_tolerance` seconds) is reported in bad_files.jsonl and
skipped. Exit status (CLI): 0 nothing skipped, 3 finished but some inputs skipped, 2 bad arguments
or settings (nothing done).

Speech tokenizers (`tokenizer`): "mel:DIR" (k-means quantizer dir; "mel:demo" = the demo corpus'
log-mel units), "base:DIR" (converted SpeechTokenizer: HuBERT + quantizer), "expressive:DIR" (the same
directory with fcpe/, f0_vqvae/ and style/: HuBERT + pitch + style units), or any
object with `encode_units(wav_16k) -> {"hubert": [T], "pitch"?: [..], "style"?: [..]}` (API only).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from spiritlm_jax.data.sources import KINDS, write_array_record, write_jsonl

FORMATS = {"array_record": ".array_record", "jsonl.gz": ".jsonl.gz", "jsonl": ".jsonl"}
STATE_DIR = ".prepare"
EXIT_OK, EXIT_USAGE, EXIT_SKIPPED = 0, 2, 3


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    out: str = ""  # output corpus directory
    manifests: tuple[str, ...] = ()  # JSONL manifests of recordings
    texts: tuple[str, ...] = ()  # text files, one example per non-empty line (.txt or .txt.gz)
    tokenizer: str = "mel:demo"  # speech tokenizer: mel:DIR | mel:demo | base:DIR | expressive:DIR
    sp_model: Optional[str] = None  # SentencePiece model: copied to out/tokenizer.model, counts text tokens
    shard_size: int = 1000  # manifest entries per audio unit (one speech + one aligned shard)
    text_shard_size: int = 10000  # text lines per text shard
    workers: int = 0  # spawned worker processes; 0 = in this process
    batch_size: int = 16  # recordings per tokenizer call
    format: str = "array_record"  # array_record | jsonl.gz | jsonl
    align_tolerance: float = 0.1  # seconds a word may end past the audio's end
    transcripts_as_text: bool = False  # also emit manifest transcripts as text examples
    overwrite: bool = False  # start over when out/ holds a different preparation
    progress: bool = True

    def __post_init__(self):
        if not self.out:
            raise ValueError("out (the output directory) is required")
        if not self.manifests and not self.texts:
            raise ValueError("nothing to prepare: give at least one manifest or text file")
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} is not one of {sorted(FORMATS)}")
        if self.shard_size < 1 or self.text_shard_size < 1 or self.batch_size < 1 or self.workers < 0:
            raise ValueError("shard_size, text_shard_size and batch_size must be >= 1, workers >= 0")
        if self.align_tolerance < 0:
            raise ValueError(f"align_tolerance must be >= 0, got {self.align_tolerance}")


# ---------------------------------------------------------------------------------------------------
# Speech tokenizers

def load_speech_tokenizer(spec: str):
    """A speech tokenizer from its spec string (module docstring)."""
    kind, _, arg = spec.partition(":")
    if not arg:
        raise ValueError(f"tokenizer {spec!r}: expected KIND:DIR with KIND in mel, base, expressive")
    if kind == "mel":
        from spiritlm_jax.speech.kmeans import MelUnitTokenizer

        return MelUnitTokenizer(Path(__file__).parent / "demo" / "quantizer" if arg == "demo" else arg)
    if kind in ("base", "expressive"):
        from spiritlm_jax.speech.tokenizer import SpeechTokenizer

        tok = SpeechTokenizer.load(arg, expressive=kind == "expressive")
        if getattr(tok, "quantizer", None) is None:
            raise ValueError(f"tokenizer {spec!r}: the converted HuBERT has no quantizer, so it gives no units")
        return tok
    raise ValueError(f"tokenizer {spec!r}: unknown kind {kind!r} (mel, base, expressive)")


def describe_tokenizer(tok, spec: str) -> str:
    d = getattr(tok, "describe", None)
    return d() if callable(d) else spec


def encode_batch(tok, wavs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Unit streams of 16 kHz recordings, chunked as the reference (<= 100 s, chunks under 80 ms
    dropped); all chunks of the batch go through one `encode_units_batch` call when the tokenizer
    has it, else one `encode_units` call per recording."""
    from spiritlm_jax.speech.audio import chunk_audio

    if not hasattr(tok, "encode_units_batch"):
        return [{k: np.asarray(v) for k, v in tok.encode_units(w).items() if v is not None} for w in wavs]
    chunks = [chunk_audio(w) for w in wavs]
    flat = tok.encode_units_batch([c for cs in chunks for c in cs])
    out, i = [], 0
    for cs in chunks:
        parts = flat[i:i + len(cs)]
        i += len(cs)
        if not parts:
            out.append({"hubert": np.zeros(0, np.int64)})
            continue
        out.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    return out


# ---------------------------------------------------------------------------------------------------
# Planning

def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _fingerprint(path: Path) -> dict:
    """Path and content hash of an input: a resumed run must see the same inputs."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"path": str(path.resolve()), "sha256": h.hexdigest()}


def read_manifest(path: Path) -> tuple[list[dict], list[dict]]:
    """(entries, bad) of one manifest; entries carry `_entry` ("manifest:line") and a resolved audio path."""
    entries, bad = [], []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                e = json.loads(line)
            except json.JSONDecodeError as err:
                bad.append({"path": where, "reason": f"not valid JSON ({err.msg})", "entry": where})
                continue
            if not isinstance(e, dict) or not isinstance(e.get("audio"), str) or not e["audio"]:
                bad.append({"path": where, "reason": "entry is not an object with an 'audio' path", "entry": where})
                continue
            audio = Path(e["audio"])
            e["audio"] = str(audio if audio.is_absolute() else path.parent / audio)
            e["_entry"] = where
            entries.append(e)
    return entries, bad


def read_text_lines(path: Path) -> list[str]:
    with _open_text(path) as f:
        return [ln.strip() for ln in f if ln.strip()]


@dataclasses.dataclass
class Unit:
    name: str  # audio-NNNNN | text-NNNNN
    items: list  # manifest entries or text lines


def plan_units(cfg: PrepareConfig) -> tuple[list[Unit], list[dict], dict]:
    """Units of work, the bad manifest lines found while planning, and the plan record (for resume)."""
    entries, bad, inputs = [], [], []
    for m in cfg.manifests:
        p = Path(m)
        if not p.is_file():
            raise FileNotFoundError(f"manifest {p} does not exist")
        e, b = read_manifest(p)
        entries += e
        bad += b
        inputs.append(_fingerprint(p))
    lines = []
    for t in cfg.texts:
        p = Path(t)
        if not p.is_file():
            raise FileNotFoundError(f"text file {p} does not exist")
        lines += [(f"{p.name}:{i}", s) for i, s in enumerate(read_text_lines(p))]
        inputs.append(_fingerprint(p))
    units = [Unit(f"audio-{i // cfg.shard_size:05d}", entries[i:i + cfg.shard_size])
             for i in range(0, len(entries), cfg.shard_size)]
    units += [Unit(f"text-{j // cfg.text_shard_size:05d}", lines[j:j + cfg.text_shard_size])
              for j in range(0, len(lines), cfg.text_shard_size)]
    settings = {k: getattr(cfg, k) for k in ("tokenizer", "shard_size", "text_shard_size", "format", "align_tolerance",
                                             "transcripts_as_text")}
    settings["sp_model"] = _fingerprint(Path(cfg.sp_model)) if cfg.sp_model else None
    plan = {"inputs": inputs, "settings": settings, "units": [u.name for u in units]}
    plan["hash"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    return units, bad, plan


# ---------------------------------------------------------------------------------------------------
# Work on one unit (in a worker or in this process)

def check_words(words: Any, duration: float, tolerance: float) -> Optional[str]:
    """None if `words` is a valid alignment for audio of `duration` seconds, else the reason."""
    if not isinstance(words, list) or not words:
        return "words must be a non-empty list of [word, start_s, end_s]"
    prev = -1.0
    for i, w in enumerate(words):
        if (not isinstance(w, (list, tuple)) or len(w) != 3 or not isinstance(w[0], str)
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in w[1:])):
            return f"word {i} is not [word, start_s, end_s]: {w!r}"
        start, end = float(w[1]), float(w[2])
        if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end < start:
            return f"word {i} {w[0]!r} has bad times start={start}, end={end}"
        if start < prev:
            return f"word {i} {w[0]!r} starts at {start} s, before the previous word ({prev} s)"
        if end > duration + tolerance:
            return (f"word {i} {w[0]!r} ends at {end} s, past the end of the audio ({duration:.3f} s): "
                    "wrong alignment or wrong audio")
        prev = start
    return None


class _Worker:
    """Per-process state: the speech tokenizer and the SentencePiece model (for token counts)."""

    def __init__(self, cfg: PrepareConfig, tokenizer=None):
        self.cfg = cfg
        self.tok = tokenizer if tokenizer is not None else (
            load_speech_tokenizer(cfg.tokenizer) if cfg.manifests else None)
        self.sp = None
        if cfg.sp_model:
            import sentencepiece as spm

            self.sp = spm.SentencePieceProcessor(model_file=str(cfg.sp_model))

    def text_tokens(self, text: str) -> int:
        return len(self.sp.encode(text)) if self.sp is not None else 0

    def run(self, unit: Unit, out: Path) -> dict:
        t0 = time.perf_counter()
        if unit.name.startswith("text-"):
            examples = {"text": [{"kind": "text", "id": i, "text": s} for i, s in unit.items]}
            bad: list[dict] = []
        else:
            examples, bad = self._audio(unit.items)
        stats = _stats(examples, self)
        shards = {}
        for kind, exs in examples.items():
            if exs:
                shards[kind] = str(_write_shard(out, kind, unit.name, exs, self.cfg.format).relative_to(out))
        streams = sorted({k for kind in ("speech", "aligned") for ex in examples.get(kind, [])
                          for k in ("hubert", "pitch", "style") if k in ex})
        return {"unit": unit.name, "shards": shards, "stats": stats, "bad": bad, "streams": streams,
                "units": describe_tokenizer(self.tok, self.cfg.tokenizer) if self.tok is not None else None,
                "seconds": time.perf_counter() - t0, "files": len(unit.items)}

    def _audio(self, entries: list[dict]) -> tuple[dict[str, list], list[dict]]:
        from spiritlm_jax.speech.audio import MIN_CHUNK_SAMPLES, SAMPLE_RATE, load_audio

        examples: dict[str, list] = {"speech": [], "aligned": [], "text": []}
        bad = []
        for b in range(0, len(entries), self.cfg.batch_size):
            batch, wavs = [], []
            for e in entries[b:b + self.cfg.batch_size]:
                try:
                    wav = load_audio(e["audio"])
                    if len(wav) < MIN_CHUNK_SAMPLES:
                        raise ValueError(f"{e['audio']}: {len(wav)} samples, shorter than one "
                                         f"{MIN_CHUNK_SAMPLES}-sample chunk: no units")
                    if "words" in e:
                        reason = check_words(e["words"], len(wav) / SAMPLE_RATE, self.cfg.align_tolerance)
                        if reason:
                            raise ValueError(f"{e['audio']}: {reason}")
                    if "text" in e and not isinstance(e["text"], str):
                        raise ValueError(f"{e['audio']}: 'text' must be a string")
                except (ValueError, FileNotFoundError) as err:
                    bad.append({"path": e["audio"], "reason": str(err), "entry": e["_entry"]})
                    continue
                batch.append(e)
                wavs.append(wav)
            for e, wav, units in zip(batch, wavs, encode_batch(self.tok, wavs) if wavs else []):
                ex: dict[str, Any] = {"kind": "aligned" if "words" in e else "speech",
                                      "id": str(e.get("id", e["audio"]))}
                if "source" in e:
                    ex["source"] = e["source"]
                if "words" in e:
                    ex["text"] = e.get("text") or " ".join(w[0] for w in e["words"])
                    ex["words"] = [[w[0], float(w[1]), float(w[2])] for w in e["words"]]
                for k in ("hubert", "pitch", "style"):
                    if units.get(k) is not None:
                        ex[k] = np.asarray(units[k]).astype(int).tolist()
                ex["_seconds"] = len(wav) / SAMPLE_RATE
                examples[ex["kind"]].append(ex)
                if self.cfg.transcripts_as_text and e.get("text"):
                    examples["text"].append({"kind": "text", "id": ex["id"], "text": e["text"]})
        return examples, bad


def _stats(examples: dict[str, list], worker: _Worker) -> dict:
    from spiritlm_jax.tokens import merge_units

    s: dict[str, dict] = {}
    for kind, exs in examples.items():
        if not exs:
            continue
        k = s.setdefault(kind, {"examples": 0, "seconds": 0.0, "speech_tokens": 0, "text_tokens": 0, "words": 0,
                                "frames": 0})
        for ex in exs:
            k["examples"] += 1
            k["seconds"] += ex.pop("_seconds", 0.0)
            if kind in ("speech", "aligned"):
                k["frames"] += len(ex["hubert"])
                k["speech_tokens"] += len(merge_units(ex.get("hubert"), ex.get("pitch"), ex.get("style")))
            if kind in ("text", "aligned"):
                text = ex["text"] if kind == "text" else " ".join(w[0] for w in ex["words"])
                k["words"] += len(text.split())
                k["text_tokens"] += worker.text_tokens(text)
    return s


def _shard_path(out: Path, kind: str, unit: str, fmt: str) -> Path:
    """<kind>/<unit><ext>: e.g. speech/audio-00003.array_record, text/text-00000.array_record (and
    text/audio-00003.* for the transcripts of that unit with transcripts_as_text)."""
    return out / kind / f"{unit}{FORMATS[fmt]}"


def _write_shard(out: Path, kind: str, unit: str, examples: list[dict], fmt: str) -> Path:
    """Write under a temporary name, then rename: a shard file is complete or absent."""
    final = _shard_path(out, kind, unit, fmt)
    tmp = final.parent / f".{final.name}.partial"
    (write_array_record if fmt == "array_record" else write_jsonl)(tmp, examples)
    os.replace(tmp, final)
    return final


_WORKER: Optional[_Worker] = None
_WORKER_ERROR: Optional[Exception] = None


def _init_worker(cfg: PrepareConfig) -> None:
    # an exception escaping a Pool initializer makes the pool restart the worker forever: keep it
    # and raise it from the first task instead, so it reaches the parent
    global _WORKER, _WORKER_ERROR
    try:
        _WORKER = _Worker(cfg)
    except Exception as e:  # noqa: BLE001 (re-raised in _run_in_worker)
        _WORKER_ERROR = e


def _run_in_worker(args: tuple[Unit, str]) -> dict:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    unit, out = args
    return _WORKER.run(unit, Path(out))


# ---------------------------------------------------------------------------------------------------
# Driver

def _read_done(path: Path) -> dict[str, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["unit"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by an interruption: that unit is redone
    return done


def _start_state(cfg: PrepareConfig, out: Path, plan: dict) -> dict[str, dict]:
    """Check or write the plan; return the done units (empty on a fresh start)."""
    state = out / STATE_DIR
    plan_file = state / "plan.json"
    if plan_file.is_file():
        old = json.loads(plan_file.read_text())
        if old.get("hash") != plan["hash"]:
            if not cfg.overwrite:
                raise ValueError(f"{out} holds a preparation of other inputs or settings (plan {old.get('hash')} "
                                 f"!= {plan['hash']}); use a new output directory or overwrite=true")
            for kind in KINDS:
                shutil.rmtree(out / kind, ignore_errors=True)
            shutil.rmtree(state)
    elif any((out / k).exists() for k in KINDS) and not cfg.overwrite:
        raise ValueError(f"{out} already has shard folders but no {STATE_DIR}/plan.json; use a new output "
                         "directory or overwrite=true")
    elif cfg.overwrite:
        for kind in KINDS:
            shutil.rmtree(out / kind, ignore_errors=True)
    state.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan, indent=1))
    for kind in KINDS:  # leftovers of an interrupted write
        (out / kind).mkdir(parents=True, exist_ok=True)
        for p in (out / kind).glob(".*.partial"):
            p.unlink()
    return {u: r for u, r in _read_done(state / "done.jsonl").items() if u in set(plan["units"])}


def summarize(cfg: PrepareConfig, plan: dict, done: dict[str, dict], bad: list[dict], units_desc: str,
              expressive: bool, text_vocab_size: Optional[int]) -> dict:
    kinds = {k: {"examples": 0, "seconds": 0.0, "speech_tokens": 0, "text_tokens": 0, "words": 0, "frames": 0}
             for k in KINDS}
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
            "aligned": {"speech": kinds["aligned"]["speech_tokens"],
                        "text": kinds["aligned"]["text_tokens"] if text_counted else None},
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
    done = _start_state(cfg, out, plan)
    todo = [u for u in units if u.name not in done]
    n_files = sum(len(u.items) for u in todo if u.name.startswith("audio-"))
    bar = None
    if cfg.progress:
        from tqdm import tqdm

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
                worker = _Worker(cfg if need_speech else dataclasses.replace(cfg, manifests=()),
                                 tokenizer)
                for u in todo:
                    record(worker.run(u, out))
        else:
            import multiprocessing as mp

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
        import sentencepiece as spm

        if Path(cfg.sp_model).resolve() != (out / "tokenizer.model").resolve():
            shutil.copyfile(cfg.sp_model, out / "tokenizer.model")
        text_vocab = spm.SentencePieceProcessor(model_file=str(cfg.sp_model)).get_piece_size()
    expressive = any("pitch" in done[u].get("streams", ()) or "style" in done[u].get("streams", ())
                     for u in plan["units"])
    units_desc = next((done[u]["units"] for u in plan["units"] if done[u].get("units")), None)
    summary = summarize(cfg, plan, done, bad, units_desc, expressive, text_vocab)
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    audio_s = sum(done[u.name]["stats"].get(k, {}).get("seconds", 0.0) for u in todo for k in ("speech", "aligned"))
    summary["_run"] = {"units_done_now": len(todo), "files": n_files, "seconds": elapsed, "audio_seconds": audio_s}
    return summary


# ---------------------------------------------------------------------------------------------------
# CLI

def main(argv=None) -> int:
    from spiritlm_jax.config import ConfigError, from_dict, merge, read_yaml

    ap = argparse.ArgumentParser(prog="python -m spiritlm_jax.prepare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", action="append", default=[], help="JSONL manifest of recordings (repeatable)")
    ap.add_argument("--text", action="append", default=[], help="text file, one example per line (repeatable)")
    ap.add_argument("--out", help="output corpus directory")
    ap.add_argument("--tokenizer", help="speech tokenizer: mel:DIR | mel:demo | base:DIR | expressive:DIR")
    ap.add_argument("--sp-model", help="SentencePiece model for the corpus (copied; counts text tokens)")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--shard-size", type=int, help="manifest entries per shard")
    ap.add_argument("--text-shard-size", type=int, help="text lines per shard")
    ap.add_argument("--batch-size", type=int, help="recordings per tokenizer call")
    ap.add_argument("--format", choices=sorted(FORMATS))
    ap.add_argument("--align-tolerance", type=float)
    ap.add_argument("--transcripts-as-text", action="store_true", default=None)
    ap.add_argument("--overwrite", action="store_true", default=None)
    ap.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    ap.add_argument("--config", help="YAML file with PrepareConfig keys (flags override it)")
    args = ap.parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if v is not None and k not in ("config", "manifest", "text")}
    if args.manifest:
        flags["manifests"] = args.manifest
    if args.text:
        flags["texts"] = args.text
    try:
        cfg = from_dict(PrepareConfig, merge(read_yaml(args.config) if args.config else {}, flags))
        summary = prepare(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    run = summary.pop("_run")
    sec = run["seconds"]
    rate = (f"{run['files'] / sec:.2f} files/s, {run['audio_seconds'] / 3600 / sec:.2e} audio-h/s, "
            f"{run['audio_seconds'] / sec:.0f}x real time") if sec > 0 and run["files"] else "no audio tokenized"
    print(f"{cfg.out}: {summary['counts']} examples, {summary['hours']} h; {summary['bad_files']} bad inputs "
          f"(bad_files.jsonl); {run['units_done_now']} shards done in this run ({rate})")
    return EXIT_SKIPPED if summary["bad_files"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
