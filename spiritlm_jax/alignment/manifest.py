"""Inputs of an alignment: manifest lines (JSON objects with `audio` and `text`; other fields kept)
and audio folders.

An audio folder (searched recursively, sorted) pairs `x.wav` / `x.flac` with the `x.txt` beside it
(its whole content is the transcript), and reads LibriSpeech's layout: `<spk>-<chapter>.trans.txt`
files whose lines are `<utterance id> <TRANSCRIPT>`, the audio `<utterance id>.flac` beside them.
A recording without a transcript is an entry without `text`; a LibriSpeech line whose audio is
missing is a bad input.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

from spiritlm_jax import paths

AUDIO_SUFFIXES = (".wav", ".flac")


def _open(path: Path):
    """A text file (gzip by its .gz suffix), local or on a bucket."""
    raw = paths.path(path).open("rb")
    return gzip.open(raw, "rt", encoding="utf-8") if str(path).endswith(".gz") else io.TextIOWrapper(raw, "utf-8")


def read_lines(path: Path) -> tuple[list[dict], list[dict]]:
    """(entries, bad) of a JSONL manifest. Each entry: {"line": the object as read, "audio": resolved
    path, "where": "manifest:line"}; relative audio paths are relative to the manifest's folder."""
    entries, bad = [], []
    with _open(path) as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                e = json.loads(raw)
            except json.JSONDecodeError as err:
                bad.append({"path": where, "reason": f"not valid JSON ({err.msg})", "entry": where})
                continue
            if not isinstance(e, dict) or not isinstance(e.get("audio"), str) or not e["audio"]:
                bad.append({"path": where, "reason": "entry is not an object with an 'audio' path", "entry": where})
                continue
            entries.append({"line": e, "audio": paths.join(paths.path(path).parent, e["audio"]), "where": where})
    return entries, bad


def scan_audio_dir(directory) -> tuple[list[dict], list[dict]]:
    """(entries, bad) of an audio folder: entries {"audio": absolute path, "id": path under the folder
    without suffix, "text"?: transcript}, sorted by id (module doc for the layouts)."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {root} does not exist")
    entries: dict[str, dict] = {}
    bad = []
    for trans in sorted(root.rglob("*.trans.txt")):
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            utt, _, text = line.strip().partition(" ")
            if not utt:
                continue
            audio = next(
                (trans.parent / f"{utt}{s}" for s in AUDIO_SUFFIXES if (trans.parent / f"{utt}{s}").is_file()), None
            )
            if audio is None:
                reason = "audio listed in a .trans.txt is missing"
                bad.append({"path": str(trans.parent / f"{utt}.flac"), "reason": reason, "entry": f"{trans}:{lineno}"})
                continue
            rel = str(audio.relative_to(root).with_suffix(""))
            entries[rel] = {"audio": str(audio.resolve()), "id": rel, "text": text.strip()}
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        rel = str(audio.relative_to(root).with_suffix(""))
        if rel in entries:
            continue
        e = {"audio": str(audio.resolve()), "id": rel}
        txt = audio.with_suffix(".txt")
        if txt.is_file():
            e["text"] = " ".join(txt.read_text(encoding="utf-8").split())
        entries[rel] = e
    return [entries[k] for k in sorted(entries)], bad


def audio_dir_fingerprint(directory, entries: list[dict]) -> dict:
    """Path and a hash of an audio folder's entries (audio names, sizes, transcripts)."""
    h = hashlib.sha256()
    for e in entries:
        p = Path(e["audio"])
        h.update(json.dumps([e["id"], p.stat().st_size, e.get("text")]).encode())
    return {"path": str(Path(directory).resolve()), "sha256": h.hexdigest()}
