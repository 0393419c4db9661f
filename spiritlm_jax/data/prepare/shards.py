"""Shard files of a prepared corpus: `<kind>/<unit><ext>`, written whole or not at all."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from spiritlm_jax import paths
from spiritlm_jax.data.sources import FORMATS, write_array_record, write_jsonl


def shard_path(out: Path, kind: str, unit: str, fmt: str) -> Path:
    """<kind>/<unit><ext>: e.g. speech/audio-00003.array_record, text/text-00000.array_record (and
    text/audio-00003.* for the transcripts of that unit with transcripts_as_text)."""
    return out / kind / f"{unit}{FORMATS[fmt]}"


def write_shard(out: Path, kind: str, unit: str, examples: list[dict], fmt: str) -> Path:
    """Write under a temporary name of this attempt's own, then rename: a shard file is complete or
    absent, also when two attempts at one unit (a Beam retry) overlap."""
    final = shard_path(out, kind, unit, fmt)
    write = write_array_record if fmt == "array_record" else write_jsonl
    if paths.is_remote(final):  # ArrayRecord writes local files: a local temporary file, then one upload
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d) / final.name
            write(tmp, examples)
            paths.upload(tmp, final)
        return final
    tmp = Path(final.parent) / f".{final.name}.{secrets.token_hex(4)}.partial"
    try:
        write(tmp, examples)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final
