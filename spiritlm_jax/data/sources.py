"""Reading and writing prepared examples: JSONL(.gz) for small data, ArrayRecord shards at scale.

Every record is one example as UTF-8 JSON (format in docs/data.md and interleave.py). A prepared
corpus directory holds shards per kind (text, speech, aligned) in any of these layouts, searched in
this order and concatenated (sorted by path within each pattern):

    <corpus>/<split>/<kind>/*.{array_record,jsonl,jsonl.gz}
    <corpus>/<split>/<kind>*.{array_record,jsonl,jsonl.gz}
    <corpus>/<kind>/*.{...}  and  <corpus>/<kind>*.{...}     (split "train" only: no split folders)

`write_array_record` / `write_jsonl` write shards, `read_examples` reads one back, and
`ExampleSource` gives random access over many shards (a Grain data source: __len__, __getitem__).
"""

from __future__ import annotations

import bisect
import gzip
import json
import zlib
from pathlib import Path
from typing import Iterable, Sequence

KINDS = ("text", "speech", "aligned")
FORMATS = {"array_record": ".array_record", "jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz"}  # shard format -> extension
EXTENSIONS = tuple(FORMATS.values())


def _dumps(ex: dict) -> str:
    if not isinstance(ex, dict):
        raise ValueError(f"an example must be a JSON object (dict), got {type(ex).__name__}")
    return json.dumps(ex, separators=(",", ":"), ensure_ascii=False)


def write_jsonl(path: str | Path, examples: Iterable[dict]) -> int:
    """Write examples one JSON object per line (gzip when the name ends in .gz); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "wt", encoding="utf-8") as f:
        for ex in examples:
            f.write(_dumps(ex) + "\n")
            n += 1
    return n


def write_array_record(path: str | Path, examples: Iterable[dict]) -> int:
    """Write examples as JSON records of one ArrayRecord shard (group_size 1: cheap random access)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ArrayRecordWriter(str(path), "group_size:1")
    n = 0
    try:
        for ex in examples:
            writer.write(_dumps(ex).encode("utf-8"))
            n += 1
    finally:
        writer.close()
    return n


def iter_jsonl(path, what: str = "file", report_bad: bool = False):
    """(where, object) for each non-empty line of a JSONL(.gz) file; `where` is "path:line" for error
    messages. A missing file is an error naming it; so is a line that is not JSON or not an object,
    unless `report_bad`: then that line yields (where, reason string) and reading goes on."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except (json.JSONDecodeError, ValueError) as e:
                reason = f"not valid JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) else str(e)
                if not report_bad:
                    raise ValueError(f"{where}: {reason}") from None
                yield where, reason
                continue
            yield where, obj


def _read_jsonl(path: Path) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path, "shard")]


def _is_shard(p: Path) -> bool:
    return p.is_file() and p.name.endswith(EXTENSIONS)


def shard_files(corpus: str | Path, split: str, kind: str) -> list[Path]:
    """The shard files of one kind and split (layouts in the module docstring); [] when none."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    root = Path(corpus)
    bases = [root / split] + ([root] if split == "train" else [])
    found: list[Path] = []
    for base in bases:
        for pattern in (f"{kind}/*", f"{kind}*"):
            found += sorted(p for p in base.glob(pattern) if _is_shard(p))
    return list(dict.fromkeys(found))  # de-duplicated, order kept


class ExampleSource:
    """Random-access examples over shard files (JSONL loaded in memory, ArrayRecord read on demand).

    Index i runs over the files in the given order. `describe(i)` names the file and record, for
    error messages.
    """

    def __init__(self, files: Sequence[str | Path]):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise ValueError("ExampleSource needs at least one shard file")
        self._parts: list = []
        lengths = []
        for f in self.files:
            if not f.is_file():
                raise FileNotFoundError(f"shard {f} does not exist")
            if not f.name.endswith((".array_record", ".jsonl", ".jsonl.gz")):
                raise ValueError(f"shard {f}: unknown format (expected one of {EXTENSIONS})")
            try:
                if f.name.endswith(".array_record"):
                    import grain

                    part = grain.sources.ArrayRecordDataSource([str(f)])
                else:
                    part = _read_jsonl(f)
            except ValueError:
                raise  # a bad line: already named "path:line"
            except (RuntimeError, OSError, EOFError, zlib.error) as e:  # a truncated or corrupt file
                raise ValueError(f"shard {f} cannot be read: truncated or corrupt ({type(e).__name__}: {e})") from None
            self._parts.append(part)
            lengths.append(len(part))
        self._starts = [0]
        for n in lengths:
            self._starts.append(self._starts[-1] + n)

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"example index {i} out of range [0, {len(self)})")
        f = bisect.bisect_right(self._starts, i) - 1
        return f, i - self._starts[f]

    def describe(self, i: int) -> str:
        f, j = self._locate(i)
        return f"{self.files[f]}#{j}"

    def __getitem__(self, i: int) -> dict:
        f, j = self._locate(int(i))
        try:
            rec = self._parts[f][j]
        except (RuntimeError, OSError) as e:
            raise ValueError(
                f"{self.files[f]}#{j}: cannot be read: truncated or corrupt ({type(e).__name__}: {e})"
            ) from None
        if isinstance(rec, dict):
            return rec
        try:
            ex = json.loads(rec.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{self.files[f]}#{j}: record is not UTF-8 JSON ({e})") from None
        if not isinstance(ex, dict):
            raise ValueError(f"{self.files[f]}#{j}: an example must be a JSON object")
        return ex


def read_examples(path: str | Path) -> list[dict]:
    """All examples of one shard file (JSONL, JSONL.gz or ArrayRecord), in order."""
    src = ExampleSource([Path(path)])
    return [src[i] for i in range(len(src))]
