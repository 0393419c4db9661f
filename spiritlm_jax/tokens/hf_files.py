"""The added-token tables of Hugging Face tokenizer directories (the released checkpoints' files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union


def read_added_tokens(d: Union[str, Path]) -> dict[str, int]:
    """{token: id} of the added tokens in a Hugging Face tokenizer directory (added_tokens.json,
    tokenizer.json "added_tokens", tokenizer_config.json "added_tokens_decoder"); {} when none.
    Files that disagree on a token's id are an error."""
    d = Path(d)
    out: dict[str, int] = {}

    def add(token: str, i, source: str):
        i = int(i)
        if token in out and out[token] != i:
            raise ValueError(f"{d}: {source} gives {token} id {i} but another file gives {out[token]}")
        out[token] = i

    for name in ("added_tokens.json", "tokenizer.json", "tokenizer_config.json"):
        p = d / name
        if not p.is_file():
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        if name == "added_tokens.json":
            for token, i in data.items():
                add(token, i, name)
        elif name == "tokenizer.json":
            for t in data.get("added_tokens", []):
                add(t["content"], t["id"], name)
        else:
            for i, t in (data.get("added_tokens_decoder") or {}).items():
                add(t["content"] if isinstance(t, dict) else str(t), i, name)
    return out


def read_tokenizer_config(d: Union[str, Path]) -> dict:
    """tokenizer_config.json of a Hugging Face tokenizer directory ({} when there is none)."""
    p = Path(d) / "tokenizer_config.json"
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}
