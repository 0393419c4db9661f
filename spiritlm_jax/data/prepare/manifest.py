"""Reading the inputs of a preparation: manifests of recordings, text files, their fingerprints, and
the check of a manifest entry's word times."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from spiritlm_jax.alignment.manifest import audio_dir_fingerprint, scan_audio_dir


def open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def fingerprint(path: Path) -> dict:
    """Path and content hash of an input: a resumed run must see the same inputs."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"path": str(path.resolve()), "sha256": h.hexdigest()}


def read_manifest(path: Path) -> tuple[list[dict], list[dict]]:
    """(entries, bad) of one manifest; entries carry `_entry` ("manifest:line") and a resolved audio path."""
    entries, bad = [], []
    with open_text(path) as f:
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


def read_audio_dir(path: Path) -> tuple[list[dict], list[dict], dict]:
    """(entries, bad, fingerprint) of an audio folder (alignment.manifest.scan_audio_dir layouts)."""
    entries, bad = scan_audio_dir(path)
    for e in entries:
        e["_entry"] = f"{path}:{e['id']}"
    return entries, bad, audio_dir_fingerprint(path, entries)


def read_text_lines(path: Path) -> list[str]:
    with open_text(path) as f:
        return [ln.strip() for ln in f if ln.strip()]


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
        start, end = float(w[1]), float(w[2])
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
