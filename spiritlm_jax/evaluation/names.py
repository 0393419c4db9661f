"""Names and identities taken from input data. File names built from item ids never point outside
the output folder; a result cache is pinned to the checkpoint and items it was computed from.

`safe_file_name("../../x")` -> "x-<hash>": only letters, digits, `.`, `_` and `-` are kept (others become
`_`), no leading dots, at most 100 characters; a name that had to change gets 8 hex digits of the
original's SHA-256, so two different ids never share a file.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str, limit: int = 100) -> str:
    """A file name (no directory part) for `name`, unique per distinct `name`."""
    name = str(name)
    safe = _UNSAFE.sub("_", name).strip("._")[:limit].rstrip("._") or "item"
    if safe != name:
        safe = f"{safe}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return safe


def inside(folder: Path, name: str, suffix: str = "") -> Path:
    """folder / (safe name + suffix), checked to stay inside `folder`."""
    path = Path(folder) / f"{safe_file_name(name)}{suffix}"
    if Path(folder).resolve() not in path.resolve().parents:
        raise ValueError(f"{name!r} does not make a file name inside {folder}")
    return path


# files of a training run that change without the model changing
_BOOKKEEPING = {"metrics.jsonl", "summary.json", ".lock", "config_changes.jsonl", "tensorboard", "broken_checkpoints"}


def checkpoint_fingerprint(path) -> dict:
    """What identifies the model of a checkpoint directory, cheaply: its resolved path and a hash of
    the (relative path, size, modification time) of its files (training bookkeeping left out). A
    retrained, converted-again or other checkpoint gets another fingerprint."""
    p = Path(path)
    h = hashlib.sha256()
    n = 0
    if p.exists():
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            rel = f.relative_to(p) if p.is_dir() else Path(f.name)
            if rel.parts and rel.parts[0] in _BOOKKEEPING or not f.is_file():
                continue
            st = f.stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            n += 1
    return {"path": str(p.resolve()), "files": n, "sha256": h.hexdigest()[:16] if n else None}


def items_digest(items) -> str:
    """A hash of evaluation items (dataclasses or dicts) in order: ids and contents."""
    import dataclasses
    import json

    rows = [dataclasses.asdict(it) if dataclasses.is_dataclass(it) else it for it in items]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]
