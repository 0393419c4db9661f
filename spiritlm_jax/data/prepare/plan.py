"""Planning a preparation: the work units, and the state records under `out/.prepare/` (plan.json:
inputs' hashes + settings; done.jsonl: one record per finished unit) that make a rerun resume."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
from pathlib import Path

from spiritlm_jax import paths
from spiritlm_jax.data.prepare.config import PrepareConfig
from spiritlm_jax.data.prepare.manifest import audio_stat, fingerprint, read_audio_dir, read_manifest, read_text_file
from spiritlm_jax.data.prepare.shards import shard_path
from spiritlm_jax.data.sources import FORMATS, KINDS

STATE_DIR = ".prepare"


@dataclasses.dataclass
class Unit:
    name: str  # audio-NNNNN | text-NNNNN
    items: list  # manifest entries or text lines


def plan_units(cfg: PrepareConfig) -> tuple[list[Unit], list[dict], dict]:
    """Units of work, the bad manifest lines found while planning, and the plan record (for resume)."""
    entries, bad, inputs = [], [], []
    for m in cfg.manifest:
        p = paths.path(m)
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
        p = paths.path(t)
        if not p.is_file():
            raise FileNotFoundError(f"text file {p} does not exist")
        text_lines, b = read_text_file(p)
        lines += [(f"{p.name}:{i}", s) for i, s in enumerate(text_lines)]
        bad += b
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
    settings["sp_model"] = fingerprint(paths.path(cfg.sp_model)) if cfg.sp_model else None
    plan = {"inputs": inputs, "settings": settings, "units": [u.name for u in units]}
    plan["hash"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    return units, bad, plan


DONE_DIR = "done"  # <out>/.prepare/done/<unit>.json: one record per unit finished by a Beam worker


def read_done(path: Path) -> dict[str, dict]:
    """The done records of `.prepare/done.jsonl` (the local runner's) and of the `done/<unit>.json`
    markers beside it (Beam workers', each written whole after the unit's shards)."""
    done = {}
    markers = path.parent / DONE_DIR
    for m in sorted(markers.glob("*.json")) if markers.is_dir() else []:
        with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, TypeError):
            rec = json.loads(m.read_text())
            done[rec["unit"]] = rec
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["unit"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by an interruption: that unit is redone
    return done


OWN_FILES = ("corpus.json", "bad_files.jsonl")  # written by prepare beside the shards (+ tokenizer.model)


def _shard_like(p: Path) -> bool:
    """A file named as prepare names its shards (<kind>/audio-NNNNN.ext, text-NNNNN.ext, or a
    temporary .<shard>[.XXXXXXXX].partial)."""
    name = re.sub(r"^\.(.*?)(\.[0-9a-f]{8})?\.partial$", r"\1", p.name)
    stem = next((name[: -len(ext)] for ext in FORMATS.values() if name.endswith(ext)), None)
    if stem is None:
        return False
    kind, _, num = stem.partition("-")
    return kind in ("audio", "text") and len(num) == 5 and num.isdigit()


def written_files(out: Path, plan: dict, done: dict[str, dict]) -> list[Path]:
    """The files a preparation with this plan may have written: its units' shards (finished or not,
    any format), their .partial leftovers, corpus.json, bad_files.jsonl, a copied tokenizer.model."""
    files = {out / n for n in OWN_FILES}
    fmt = plan.get("settings", {}).get("format")
    for unit in plan.get("units", []):
        for kind in KINDS:
            for f in (fmt,) if fmt in FORMATS else FORMATS:
                path = shard_path(out, kind, unit, f)
                files |= {path, *path.parent.glob(f".{path.name}*.partial")}
    for rec in done.values():
        files |= {out / sh for sh in rec.get("shards", {}).values()}
    sp = plan.get("settings", {}).get("sp_model")
    if isinstance(sp, dict) and sp.get("path") != paths.resolved(out / "tokenizer.model"):
        files.add(out / "tokenizer.model")  # a copy prepare made (not the user's own model file)
    return sorted(p for p in files if p.is_file())


def remove_preparation(out: Path, state: Path) -> list[Path]:
    """`overwrite`: delete what the previous preparation wrote (its plan and done-list say what) and
    nothing else; empty shard folders go too. Files of the user's under out/ are kept."""
    old = json.loads((state / "plan.json").read_text())
    files = written_files(out, old, read_done(state / "done.jsonl"))
    for f in files:
        f.unlink()
    paths.path(state).rmtree()
    for kind in KINDS:
        with contextlib.suppress(OSError, ValueError):  # not empty: something of the user's is there
            (out / kind).rmdir()
    return files


def start_state(cfg: PrepareConfig, out: Path, plan: dict) -> dict[str, dict]:
    """Check or write the plan; return the done units (empty on a fresh start). A done unit whose
    audio files changed since (size or modification time) is done again."""
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
            remove_preparation(out, state)
    else:
        ours = sorted(p for k in KINDS if (out / k).is_dir() for p in (out / k).iterdir() if _shard_like(p))
        if ours:
            raise ValueError(
                f"{out} already has shard files (e.g. {ours[0]}) but no {STATE_DIR}/plan.json, so which files "
                "an earlier run wrote is unknown; use a new output directory or remove them"
            )
    state.mkdir(parents=True, exist_ok=True)
    paths.write_file(plan_file, json.dumps(plan, indent=1))
    for kind in KINDS:  # leftovers of an interrupted write
        (out / kind).mkdir(parents=True, exist_ok=True)
        for p in (out / kind).glob(".*.partial"):
            p.unlink()
    done = {u: r for u, r in read_done(state / "done.jsonl").items() if u in set(plan["units"])}
    return done


def changed_audio(rec: dict) -> list[str]:
    """The audio files of a done unit whose size or modification time differ from when it was done."""
    return [path for path, st in rec.get("audio", {}).items() if audio_stat(path) != st]
