"""STSP data: the evaluation manifests, the few-shot pools, the release layout, sentiment labels."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Optional

from spiritlm_jax.data.sources import iter_jsonl

DIRECTIONS = {
    "T2T": ("text", "text"),
    "T2S": ("text", "speech"),
    "S2S": ("speech", "speech"),
    "S2T": ("speech", "text"),
}
FEWSHOT_FILES = {"T2T": "t2t.jsonl", "T2S": "t2s.jsonl", "S2T": "s2t.jsonl", "S2S": "s2s.jsonl"}
SENTIMENTS = ("positive", "negative", "neutral")
EMOTION_TO_SENTIMENT = {
    "happy": "positive",
    "amused": "positive",
    "angry": "negative",
    "sad": "negative",
    "default": "neutral",
    "neutral": "neutral",
}
LABEL_TO_SENTIMENT = {
    **{s: s for s in SENTIMENTS},
    "pos": "positive",
    "neg": "negative",
    "neu": "neutral",
    **EMOTION_TO_SENTIMENT,
}
MANIFEST_FIELDS = {"id", "wav_path", "emotion", "sentiment", "asr", "split", "speaker"}
FEWSHOT_REQUIRED = {"prompt", "generation", "sentiment"}
FEWSHOT_FIELDS = FEWSHOT_REQUIRED | {"id", "emotion", "split", "speaker"}
SAMPLE_RATE = 16000


@dataclasses.dataclass
class StspItem:
    id: str
    sentiment: str
    wav: Optional[str] = None
    text: Optional[str] = None
    emotion: Optional[str] = None


# ----- data -----------------------------------------------------------------------------------
def release_root(manifest: Path) -> Optional[Path]:
    """The release root when `manifest` lies under <root>/manifest/ next to <root>/data."""
    for parent in Path(manifest).absolute().parents:
        if parent.name == "manifest" and (parent.parent / "data").is_dir():
            return parent.parent
    return None


def default_data_root(manifest: Path) -> Path:
    root = release_root(manifest)
    return root / "data" if root is not None else Path(manifest).absolute().parent


def default_fewshot_dir(manifest: Path) -> Optional[Path]:
    root = release_root(manifest)
    return root / "manifest" / "few_shot" if root is not None else None


def _gold(raw: dict, where: str) -> str:
    if raw.get("sentiment") is not None:
        s = str(raw["sentiment"]).lower()
        if s not in SENTIMENTS:
            raise ValueError(f"{where}: sentiment must be one of {list(SENTIMENTS)}, got {raw['sentiment']!r}")
        return s
    emotion = str(raw.get("emotion", "")).lower()
    if emotion not in EMOTION_TO_SENTIMENT:
        raise ValueError(
            f"{where}: no 'sentiment', and emotion {raw.get('emotion')!r} does not map to one "
            f"(known: {sorted(EMOTION_TO_SENTIMENT)})"
        )
    return EMOTION_TO_SENTIMENT[emotion]


def load_manifest(path: str | Path, data_root: Optional[str | Path] = None) -> list[StspItem]:
    """An STSP evaluation manifest -> items; format errors name the line and the field."""
    path = Path(path)
    root = Path(data_root) if data_root is not None else default_data_root(path)
    items, seen, extra = [], set(), set()
    for where, raw in iter_jsonl(path, "STSP manifest"):
        extra |= set(raw) - MANIFEST_FIELDS
        if "id" not in raw:
            raise ValueError(f"{where}: missing 'id'")
        item_id = str(raw["id"])
        if item_id in seen:
            raise ValueError(f"{where}: id {item_id} appears twice")
        seen.add(item_id)
        wav = raw.get("wav_path")
        if wav is not None and not Path(wav).is_absolute():
            wav = str(root / wav)
        text = raw.get("asr")
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{where}: 'asr' must be a string, got {type(text).__name__}")
        items.append(StspItem(item_id, _gold(raw, where), wav, text, raw.get("emotion")))
    if not items:
        raise ValueError(f"STSP manifest {path} has no items")
    _warn_extra(path, extra, MANIFEST_FIELDS)
    return items


def _warn_extra(path: Path, extra: set, known: set) -> None:
    """One warning per file for fields this reader does not use (the reference ignores them too)."""
    if extra:
        warnings.warn(
            f"{path}: ignoring field(s) {sorted(extra)} (used: {sorted(known)})",
            UserWarning,
            stacklevel=3,
        )


def load_fewshot_pool(path: str | Path) -> list[dict]:
    """Few-shot examples ({prompt, generation, sentiment, where}); errors name the line."""
    pool, extra = [], set()
    for where, raw in iter_jsonl(Path(path), "few-shot manifest"):
        extra |= set(raw) - FEWSHOT_FIELDS
        missing = FEWSHOT_REQUIRED - set(raw)
        if missing:
            raise ValueError(f"{where}: missing field(s) {sorted(missing)}")
        pool.append(
            {
                "prompt": str(raw["prompt"]),
                "generation": str(raw["generation"]),
                "sentiment": _gold(raw, where),
                "where": where,
            }
        )
    if not pool:
        raise ValueError(f"few-shot manifest {path} has no examples")
    _warn_extra(Path(path), extra, FEWSHOT_FIELDS)
    return pool
