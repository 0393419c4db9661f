"""Reading and writing prepared examples: JSONL(.gz) for small data, ArrayRecord shards at scale.

A corpus directory holds `<split>/<kind>*.jsonl[.gz]` or `<split>/<kind>*.array_record` files
(split: train, eval; kind: text, speech, aligned), `tokenizer.model` and `corpus.json`.
Each record is one example as UTF-8 JSON (see interleave.py for the format).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterable, Sequence

KINDS = ("text", "speech", "aligned")


def write_jsonl(path: str | Path, examples: Iterable[dict]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "wt", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex, separators=(",", ":")) + "\n")
            n += 1
    return n


def write_array_record(path: str | Path, examples: Iterable[dict]) -> int:
    from array_record.python.array_record_module import ArrayRecordWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ArrayRecordWriter(str(path), "group_size:1")
    n = 0
    try:
        for ex in examples:
            writer.write(json.dumps(ex, separators=(",", ":")).encode("utf-8"))
            n += 1
    finally:
        writer.close()
    return n


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return out


def shard_files(corpus: str | Path, split: str, kind: str) -> list[Path]:
    d = Path(corpus) / split
    files = sorted(d.glob(f"{kind}*.jsonl")) + sorted(d.glob(f"{kind}*.jsonl.gz")) + sorted(d.glob(f"{kind}*.array_record"))
    return files


class ExampleSource:
    """Random-access examples of one kind (a grain data source: __len__ and __getitem__)."""

    def __init__(self, files: Sequence[Path]):
        self.files = list(files)
        jsonl = [f for f in self.files if not f.name.endswith(".array_record")]
        records = [f for f in self.files if f.name.endswith(".array_record")]
        if jsonl and records:
            raise ValueError(f"mixed JSONL and ArrayRecord shards for one kind: {self.files}")
        self._examples: list[dict] | None = None
        self._records = None
        if records:
            import grain

            self._records = grain.sources.ArrayRecordDataSource([str(f) for f in records])
        else:
            self._examples = [ex for f in jsonl for ex in _read_jsonl(f)]

    def __len__(self) -> int:
        return len(self._examples) if self._examples is not None else len(self._records)

    def __getitem__(self, i: int) -> dict:
        if self._examples is not None:
            return self._examples[i]
        return json.loads(self._records[i].decode("utf-8"))


def read_examples(path: str | Path) -> list[dict]:
    """All examples of one file (JSONL, JSONL.gz or ArrayRecord)."""
    src = ExampleSource([Path(path)])
    return [src[i] for i in range(len(src))]
