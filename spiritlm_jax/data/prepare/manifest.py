"""Reading the inputs of a preparation: manifests of recordings, text files, their fingerprints, and
the check of a manifest entry's word times."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from pathlib import Path
from typing import Any, Optional

import numpy as np

from spiritlm_jax import paths
from spiritlm_jax.alignment.manifest import audio_dir_fingerprint, scan_audio_dir


def open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_lines(path: Path) -> tuple[list[tuple[str, str]], list[dict]]:
    """([("path:line", text)], bad) of a text or manifest file (.gz read as gzip). A bad input is
    never fatal: a line that is not UTF-8 is reported (and skipped), a truncated or corrupt gzip
    file keeps the lines read before the damage and is reported once, naming the file."""
    lines, bad = [], []
    lineno = 0
    try:
        with paths.path(path).open("rb") as raw_f, gzip.open(raw_f) if str(path).endswith(".gz") else raw_f as f:
            for lineno, raw in enumerate(f, 1):
                where = f"{path}:{lineno}"
                try:
                    lines.append((where, raw.decode("utf-8")))
                except UnicodeDecodeError as e:
                    bad.append({"path": where, "reason": f"not valid UTF-8 (byte {e.start})", "entry": where})
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        where = f"{path}:{lineno + 1}"
        bad.append(
            {
                "path": str(path),
                "reason": f"file is truncated or corrupt after line {lineno} ({type(e).__name__}: {e}); "
                "the lines before it are kept",
                "entry": where,
            }
        )
    return lines, bad


def fingerprint(path: Path) -> dict:
    """Path and content hash of an input: a resumed run must see the same inputs."""
    h = hashlib.sha256()
    with paths.path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"path": paths.resolved(path), "sha256": h.hexdigest()}


def audio_stat(path: str) -> Optional[list[int]]:
    """[size, mtime_ns] of an audio file (None if it is missing): a cheap check that a recording
    did not change since its unit was prepared."""
    try:
        if paths.is_remote(path):  # an object store gives the size (time: 0)
            st = paths.path(path).stat()
            return [st.length, int(st.mtime or 0)]
        st = Path(path).stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def read_manifest(path: Path) -> tuple[list[dict], list[dict]]:
    """(entries, bad) of one manifest; entries carry `_entry` ("manifest:line") and a resolved audio path."""
    entries = []
    lines, bad = read_lines(path)
    for where, line in lines:
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            bad.append({"path": where, "reason": f"not valid JSON ({err.msg})", "entry": where})
            continue
        except (ValueError, RecursionError) as err:  # e.g. an integer of more than 4300 digits
            bad.append({"path": where, "reason": f"not readable JSON ({type(err).__name__})", "entry": where})
            continue
        if not isinstance(e, dict) or not isinstance(e.get("audio"), str) or not e["audio"]:
            bad.append({"path": where, "reason": "entry is not an object with an 'audio' path", "entry": where})
            continue
        e["audio"] = paths.join(paths.path(path).parent, e["audio"])
        e["_entry"] = where
        entries.append(e)
    return entries, bad


def read_audio_dir(path: Path) -> tuple[list[dict], list[dict], dict]:
    """(entries, bad, fingerprint) of an audio folder (alignment.manifest.scan_audio_dir layouts)."""
    if paths.is_remote(path):
        raise ValueError(f"audio_dir {path}: a folder on a bucket is not scanned; list its files in a manifest")
    entries, bad = scan_audio_dir(path)
    for e in entries:
        e["_entry"] = f"{path}:{e['id']}"
    return entries, bad, audio_dir_fingerprint(path, entries)


def read_text_lines(path: Path) -> list[str]:
    return read_text_file(path)[0]


def read_text_file(path: Path) -> tuple[list[str], list[dict]]:
    """(non-empty stripped lines, bad) of a text file: see `read_lines`."""
    lines, bad = read_lines(path)
    return [t.strip() for _, t in lines if t.strip()], bad


def check_words(words: Any, duration: float, tolerance: float) -> Optional[str]:
    """None if `words` is a valid alignment for audio of `duration` seconds, else the reason."""
    if not isinstance(words, list) or not words:
        return "words must be a non-empty list of [word, start_s, end_s]"
    prev = -1.0
    for i, w in enumerate(words):
        if (
            not isinstance(w, (list, tuple))
            or len(w) != 3
            or not isinstance(w[0], str)
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in w[1:])
        ):
            return f"word {i} is not [word, start_s, end_s]: {w!r}"
        try:
            start, end = float(w[1]), float(w[2])
        except OverflowError:
            return f"word {i} {w[0]!r} has a time too large to be a number of seconds"
        if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end < start:
            return f"word {i} {w[0]!r} has bad times start={start}, end={end}"
        if start < prev:
            return f"word {i} {w[0]!r} starts at {start} s, before the previous word ({prev} s)"
        if end > duration + tolerance:
            return (
                f"word {i} {w[0]!r} ends at {end} s, past the end of the audio ({duration:.3f} s): "
                "wrong alignment or wrong audio"
            )
        prev = start
    return None
