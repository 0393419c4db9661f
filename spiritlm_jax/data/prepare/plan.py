"""Planning a preparation: the work units, and the state records under `out/.prepare/` (plan.json:
inputs' hashes + settings; done.jsonl: one record per finished unit) that make a rerun resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from spiritlm_jax.data.prepare.config import PrepareConfig
from spiritlm_jax.data.prepare.manifest import fingerprint, read_audio_dir, read_manifest, read_text_lines
from spiritlm_jax.data.sources import KINDS

STATE_DIR = ".prepare"


@dataclasses.dataclass
class Unit:
    name: str  # audio-NNNNN | text-NNNNN
    items: list  # manifest entries or text lines


def plan_units(cfg: PrepareConfig) -> tuple[list[Unit], list[dict], dict]:
    """Units of work, the bad manifest lines found while planning, and the plan record (for resume)."""
    entries, bad, inputs = [], [], []
    for m in cfg.manifest:
        p = Path(m)
        if not p.is_file():
            raise FileNotFoundError(f"manifest {p} does not exist")
        e, b = read_manifest(p)
        entries += e
        bad += b
        inputs.append(fingerprint(p))
    for d in cfg.audio_dir:
        e, b, fp = read_audio_dir(Path(d))
        entries += e
        bad += b
        inputs.append(fp)
    lines = []
    for t in cfg.text:
        p = Path(t)
        if not p.is_file():
            raise FileNotFoundError(f"text file {p} does not exist")
        lines += [(f"{p.name}:{i}", s) for i, s in enumerate(read_text_lines(p))]
        inputs.append(fingerprint(p))
    units = [
        Unit(f"audio-{i // cfg.shard_size:05d}", entries[i : i + cfg.shard_size])
        for i in range(0, len(entries), cfg.shard_size)
    ]
    units += [
        Unit(f"text-{j // cfg.text_shard_size:05d}", lines[j : j + cfg.text_shard_size])
        for j in range(0, len(lines), cfg.text_shard_size)
    ]
    settings = {
        k: getattr(cfg, k)
        for k in ("tokenizer", "shard_size", "text_shard_size", "format", "align_tolerance", "transcripts_as_text")
    }
    if cfg.align:  # only when set: plans of earlier versions keep their hash
        settings["align"] = cfg.align
    settings["sp_model"] = fingerprint(Path(cfg.sp_model)) if cfg.sp_model else None
    plan = {"inputs": inputs, "settings": settings, "units": [u.name for u in units]}
    plan["hash"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    return units, bad, plan


def read_done(path: Path) -> dict[str, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["unit"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by an interruption: that unit is redone
    return done


def start_state(cfg: PrepareConfig, out: Path, plan: dict) -> dict[str, dict]:
    """Check or write the plan; return the done units (empty on a fresh start)."""
    state = out / STATE_DIR
    plan_file = state / "plan.json"
    if plan_file.is_file():
        old = json.loads(plan_file.read_text())
        if old.get("hash") != plan["hash"]:
            if not cfg.overwrite:
                raise ValueError(
                    f"{out} holds a preparation of other inputs or settings (plan {old.get('hash')} "
                    f"!= {plan['hash']}); use a new output directory or overwrite=true"
                )
            for kind in KINDS:
                shutil.rmtree(out / kind, ignore_errors=True)
            shutil.rmtree(state)
    elif any((out / k).exists() for k in KINDS) and not cfg.overwrite:
        raise ValueError(
            f"{out} already has shard folders but no {STATE_DIR}/plan.json; use a new output "
            "directory or overwrite=true"
        )
    elif cfg.overwrite:
        for kind in KINDS:
            shutil.rmtree(out / kind, ignore_errors=True)
    state.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan, indent=1))
    for kind in KINDS:  # leftovers of an interrupted write
        (out / kind).mkdir(parents=True, exist_ok=True)
        for p in (out / kind).glob(".*.partial"):
            p.unlink()
    return {u: r for u, r in read_done(state / "done.jsonl").items() if u in set(plan["units"])}
