"""A likelihood-pair evaluation run (`python -m spiritlm_jax.evaluate likelihood`): items from a
manifest, ZeroSpeech folder or (Topic-)StoryCloze source, scored per setting with a per-setting score
cache (<out>/scores_<setting>.json, so a rerun resumes), then the report. The caches are pinned to the
checkpoint and the items (<out>/cache_key.json): another checkpoint or item set into a used --out is
refused; duplicate item ids are an error."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional

from spiritlm_jax.evaluation.likelihood import (
    SETTINGS,
    Encoder,
    accuracy,
    load_items,
    read_zerospeech_gold,
    score_items,
)
from spiritlm_jax.evaluation.names import checkpoint_fingerprint, items_digest
from spiritlm_jax.evaluation.report import write_report
from spiritlm_jax.evaluation.storycloze import load_storycloze
from spiritlm_jax.inference import SpiritLM


@dataclasses.dataclass(frozen=True)
class LikelihoodRunConfig:
    """`python -m spiritlm_jax.evaluate likelihood`: one item source (items, zerospeech, storycloze_csv or
    storycloze_dir) scored in one or more settings."""

    checkpoint: str  # training run, converted model directory or converted tree
    out: str  # output folder (report, score caches)
    setting: list[str] = dataclasses.field(
        default_factory=list, metadata={"help": "T, S, T2S or S2T (repeat --setting for several; at least one)"}
    )
    items: Optional[str] = None  # manifest JSONL (see spiritlm_jax/evaluation/likelihood.py)
    zerospeech: Optional[str] = None  # a ZeroSpeech 2021 lexical/syntactic folder with gold.csv
    storycloze_csv: Optional[str] = None  # the ROCStories cloze test CSV (text StoryCloze)
    storycloze_dir: Optional[str] = None  # a spoken StoryCloze release folder (sSC or tSC)
    topic: bool = False  # Topic-StoryCloze: wrong endings replaced by other stories' right endings
    topic_seed: int = 0
    name: Optional[str] = None  # report title (default: the source's name)
    batch_size: int = 16
    chunk: int = 256  # items scored between cache writes

    def __post_init__(self):
        bad = [s for s in self.setting if s not in SETTINGS]
        if bad:
            raise ValueError(f"setting: invalid choice: {bad[0]!r} (choose from {', '.join(SETTINGS)})")
        if not self.setting:
            raise ValueError("give at least one --setting (T, S, T2S, S2T)")
        sources = [k for k in ("items", "zerospeech", "storycloze_csv", "storycloze_dir") if getattr(self, k)]
        if len(sources) != 1:
            raise ValueError(
                "give exactly one item source: --items, --zerospeech, --storycloze-csv or "
                f"--storycloze-dir (got {sources or 'none'})"
            )


def likelihood_items(cfg: LikelihoodRunConfig):
    """(items, default report name) from the config's source."""
    if cfg.topic and not (cfg.storycloze_csv or cfg.storycloze_dir):
        raise ValueError(
            "--topic builds Topic-StoryCloze from StoryCloze: use it with --storycloze-csv or --storycloze-dir"
        )
    if cfg.zerospeech:
        return read_zerospeech_gold(cfg.zerospeech), Path(cfg.zerospeech).name
    if cfg.storycloze_csv or cfg.storycloze_dir:
        items = load_storycloze(cfg.storycloze_csv, cfg.storycloze_dir, topic=cfg.topic, seed=cfg.topic_seed)
        src = Path(cfg.storycloze_csv or cfg.storycloze_dir)
        return items, ("Topic-" if cfg.topic else "") + (src.stem if cfg.storycloze_csv else src.name)
    return load_items(cfg.items), Path(cfg.items).stem


def check_forms(items, setting: str) -> None:
    """A setting no item can be scored in is a usage error, not N bad items."""
    ctx_form, cand_form = SETTINGS[setting]
    if setting in ("T2S", "S2T") and all(it.context is None for it in items):
        raise ValueError(
            f"setting {setting} scores candidates given a context in the other modality, but these "
            "items have no context (e.g. whole spoken stories); use T or S"
        )
    usable = [
        it
        for it in items
        if all(cand_form in c for c in it.candidates) and (it.context is None or ctx_form in it.context)
    ]
    if not usable:
        need = {"text": "text (transcripts)", "audio": "audio"}
        raise ValueError(
            f"setting {setting} needs {need[ctx_form]} contexts and {need[cand_form]} candidates; no item has them"
        )


PIN_FILE = "cache_key.json"


def check_unique_ids(items) -> None:
    """Scores are cached and reported by item id: two items with one id would merge their candidates."""
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.id in seen:
            raise ValueError(
                f"item id {it.id!r} appears twice (items {seen[it.id] + 1} and {i + 1}); ids must be unique"
            )
        seen[it.id] = i


def pin_cache(out: Path, key: dict) -> None:
    """The score caches in `out` belong to one checkpoint and one item set (<out>/cache_key.json):
    another checkpoint or other items into a used --out is refused instead of reporting old scores."""
    path = out / PIN_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in key if old.get(k) != key[k])
        if diff:
            raise ValueError(
                f"{out} holds scores of another {' and '.join(diff)} ({path}); use a new --out, or delete "
                "its scores_*.json to score again"
            )
        return
    stale = sorted(out.glob("scores_*.json")) if out.is_dir() else []
    if stale:
        raise ValueError(
            f"{out} holds score caches ({stale[0].name}) of an unknown checkpoint and items; use a new --out or "
            "delete them"
        )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(key, indent=2))


def run_likelihood(cfg: LikelihoodRunConfig, progress: Callable = print) -> int:
    """Score (or resume) every setting and write <out>/report.{json,md,png}."""
    items, default_name = likelihood_items(cfg)
    check_unique_ids(items)
    for setting in cfg.setting:
        check_forms(items, setting)
    progress(f"{len(items)} items from {default_name}")
    out = Path(cfg.out)
    pin_cache(out, {"checkpoint": checkpoint_fingerprint(cfg.checkpoint), "items": items_digest(items)})
    lm = SpiritLM.from_checkpoint(cfg.checkpoint)
    enc = Encoder(lm.tokenizer, lm.speech_tokenizer)
    rows = {}
    for setting in cfg.setting:
        cache = out / f"scores_{setting}.json"
        done = json.loads(cache.read_text()) if cache.is_file() else {}
        todo = [it for it in items if it.id not in done]
        for start in range(0, len(todo), cfg.chunk):
            part = todo[start : start + cfg.chunk]
            done.update(score_items(lm.model, lm.params, part, enc, setting, cfg.batch_size))
            cache.write_text(json.dumps(done))
            progress(f"{setting}: {min(start + cfg.chunk, len(todo))}/{len(todo)} items scored")
        rows[setting] = r = accuracy(done, items)
        progress(
            f"{setting}: accuracy {r['accuracy']} (normalised {r['accuracy_normalized']}) over {r['n']} items, "
            f"{r['bad']} bad"
        )
    write_report(
        out,
        "likelihood",
        cfg.name or default_name,
        rows,
        rows_key="settings",
        summary={s: r.get("accuracy_normalized") for s, r in rows.items()},
    )
    progress(f"report: {out / 'report.md'}")
    return 0
