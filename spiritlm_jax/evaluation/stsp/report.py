"""STSP scores: accuracy with a bootstrap interval and a confusion matrix, and the report files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from spiritlm_jax.evaluation.report import fmt_ci, fmt_number, write_report
from spiritlm_jax.evaluation.stsp.manifest import SENTIMENTS, StspItem


def accuracy_stats(
    records: dict, items: Sequence[StspItem], prompt_errors: dict, n_boot: int = 1000, seed: int = 0
) -> dict:
    hits, bad, confusion = [], [], {s: {t: 0 for t in SENTIMENTS} for s in SENTIMENTS}
    for it in items:
        rec = records.get(it.id)
        err = prompt_errors.get(it.id) or (rec or {}).get("error") or (None if rec else "not run")
        if err:
            bad.append({"id": it.id, "error": err})
            continue
        hits.append(int(rec["correct"]))
        confusion[rec["gold"]][rec["pred"]] += 1
    out = {"n": len(hits), "bad": len(bad), "bad_items": bad[:20], "confusion": confusion, "accuracy": None}
    # the reference's accuracy: every gold item in the denominator, an item that failed counts as wrong
    out["accuracy_reference"] = float(sum(hits) / len(items)) if items else None
    if hits:
        h = np.asarray(hits, np.float64)
        boot = h[np.random.default_rng(seed).integers(0, len(h), (n_boot, len(h)))].mean(1)
        out["accuracy"] = float(h.mean())
        out["accuracy_ci95"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    return out


STSP_COLUMNS = [
    ("n", "n", fmt_number),
    ("bad", "bad", fmt_number),
    ("accuracy", "accuracy", fmt_number),
    ("95% CI", "accuracy_ci95", fmt_ci),
    ("reference accuracy", "accuracy_reference", fmt_number),
]


def write_stsp_report(
    out: Path,
    rows: dict,
    directions,
    prompt_rows: dict,
    shots: int,
    seed: int,
    shots_used: dict,
    sampling: dict,
    manifest: Optional[str],
) -> None:
    """<out>/report.{json,md,png}: a row per direction, their average and the classifiers' prompt rows."""
    accs = [rows[d]["accuracy"] for d in directions if rows[d]["accuracy"] is not None]
    average = float(np.mean(accs)) if accs else None
    table = dict(rows)
    ref = [rows[d].get("accuracy_reference") for d in directions]
    table["average"] = {
        "n": sum(rows[d]["n"] for d in directions),
        "bad": sum(rows[d]["bad"] for d in directions),
        "accuracy": average,
        "accuracy_reference": float(np.mean(ref)) if ref and None not in ref else None,
    }
    table.update(prompt_rows)
    summary = {d: rows[d]["accuracy"] for d in directions}
    summary["average"] = average
    summary.update({k.replace(" (", "_").rstrip(")"): v["accuracy"] for k, v in prompt_rows.items()})
    extra = {"shots": shots, "seed": seed, "few_shot_examples": shots_used, "sampling": sampling}
    title = f"STSP {shots}-shot" + (f" ({Path(manifest).name})" if manifest else "")
    write_report(
        out,
        "stsp",
        title,
        table,
        STSP_COLUMNS,
        chart_key="accuracy",
        chart_label="accuracy",
        chance=1 / 3,
        summary=summary,
        extra=extra,
        first_column="direction",
        notes=[
            "accuracy: over the scored items (n); reference accuracy: the reference's way, over every gold "
            "item (n + bad), an item that failed counting as wrong. Average: mean over the directions. "
            "Prompt rows: the classifiers' accuracy on the prompts themselves (their ceiling on this "
            "data). Chance is 1/3."
        ],
    )
