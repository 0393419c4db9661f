"""Report files every evaluation command writes into its output folder, and the per-item cache.

    write_report(out, "sStoryCloze", rows, columns=LIKELIHOOD_COLUMNS, chart_key="accuracy_normalized",
                 summary={"S": 0.61})

writes <out>/report.json ({"task", "title", "rows" (or `rows_key`), "summary", ...extra}), <out>/report.md (a table,
one line per row) and <out>/report.png (a bar chart of `chart_key`; skipped with a note when
matplotlib, from the `eval` extra, is missing). `summary` is a flat {name: number} dict: the suite
command copies it into its own table, so every task should give its headline numbers there.

`JsonlCache` is the resume mechanism: one JSON object per finished item, appended and flushed as
items finish, read back (a torn last line from a killed run is ignored) on the next run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence


def fmt_number(v) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def fmt_ci(v) -> str:
    return "n/a" if not v else f"[{v[0]:.3f}, {v[1]:.3f}]"


# (header, key, formatter) of the likelihood table
LIKELIHOOD_COLUMNS = [
    ("n", "n", fmt_number),
    ("bad", "bad", fmt_number),
    ("accuracy", "accuracy", fmt_number),
    ("95% CI", "accuracy_ci95", fmt_ci),
    ("normalised", "accuracy_normalized", fmt_number),
    ("95% CI", "accuracy_normalized_ci95", fmt_ci),
]


def markdown_table(rows: dict, columns: Sequence[tuple[str, str, Callable]], first: str = "setting") -> str:
    lines = ["| " + " | ".join([first] + [c[0] for c in columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, r in rows.items():
        lines.append("| " + " | ".join([str(name)] + [f(r.get(k)) for _, k, f in columns]) + " |")
    return "\n".join(lines)


def bar_chart(path: Path, values: dict, title: str, ylabel: str, chance: Optional[float] = None) -> bool:
    """A bar per entry of `values` (None = missing, drawn as 0); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no report.png (pip install -e '.[eval]')", file=sys.stderr)
        return False
    names = list(values)
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * max(len(names), 1), 3))
    ax.bar(names, [values[n] or 0 for n in names])
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(
    out: Path,
    task: str,
    title: str,
    rows: dict,
    columns=LIKELIHOOD_COLUMNS,
    *,
    chart_key: str = "accuracy_normalized",
    chart_label: str = "accuracy (length-normalised)",
    chance: Optional[float] = 0.5,
    summary: Optional[dict] = None,
    extra: Optional[dict] = None,
    notes: Iterable[str] = (),
    first_column: str = "setting",
    rows_key: str = "rows",
) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"task": task, "title": title, rows_key: rows, "summary": summary or {}}
    payload.update(extra or {})
    (out / "report.json").write_text(json.dumps(payload, indent=2))
    md = [f"# {title}", "", markdown_table(rows, columns, first_column)]
    notes = list(notes)
    if notes:
        md += [""] + notes
    (out / "report.md").write_text("\n".join(md) + "\n")
    bar_chart(out / "report.png", {k: r.get(chart_key) for k, r in rows.items()}, title, chart_label, chance)


class JsonlCache:
    """Finished items of one run, keyed by a field of each record (default "id")."""

    def __init__(self, path: Path, key: str = "id"):
        self.path, self.key = Path(path), key
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            text = self.path.read_text()
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a killed run: that item is redone
                self.records[str(rec[key])] = rec
            if text and not text.endswith("\n"):  # drop the torn tail so appends start on a new line
                self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records.values()))

    def __contains__(self, k) -> bool:
        return str(k) in self.records

    def add(self, rec: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        self.records[str(rec[self.key])] = rec
