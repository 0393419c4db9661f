"""The interleaving ablation, end to end: corpus, three training runs, evaluation, report.

    python -m benchmarks.interleaving_ablation [--work runs/ablation] [--seeds 0 1 2] [--steps N] [--stage all]
        [--variants none pairs interleaved]

Stages (each resumes: a finished stage is skipped, an interrupted run continues from its checkpoint,
scored items are cached):
1. corpus: benchmarks/interleaving_ablation/corpus.py (stories, espeak-ng speech, units, prepare), built
   once with the corpus seed (0): every training seed sees the same pools and is scored on the same items.
2. runs: `python -m spiritlm_jax.train` three times per seed on the same corpus, same model, steps, batch
   and mixture weights; only `data.aligned_as` differs: none (= separate), pairs, interleaved. The seed
   sets the initialisation, the data order and the interleaving/pairing draws.
3. eval: `python -m spiritlm_jax.evaluate likelihood --storycloze-dir <work>/corpus/cloze` in T, S,
   T2S and S2T for each run.
4. report: docs/experiments/interleaving_ablation.{json,png}: per seed, the mean over seeds with a 95 %
   interval from a bootstrap over seeds and items, and interleaved/pairs minus none paired by seed and item.
   It covers the runs scored so far (`--stage report` writes it alone; `--variants` trains a subset).

The protocol (sizes, model, steps) is fixed in RUN and CorpusConfig below and in
docs/experiments/interleaving_ablation.md; it is not tuned on the results.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.interleaving_ablation.corpus import CorpusConfig, build_corpus  # noqa: E402

VARIANTS = {"none": "separate", "pairs": "pairs", "interleaved": "interleaved"}  # run name -> data.aligned_as
SETTINGS = ("T", "S", "T2S", "S2T")
PAPER = {  # Table 6 of the paper, Topic-StoryCloze accuracy (%), BASE 7B
    "interleaved": {"T": 98.0, "S": 82.9, "T2S": 72.7, "S2T": 88.6},
    "none": {"T": 97.7, "S": 74.0, "T2S": 57.5, "S2T": 71.9},
    "pairs": {"T": 97.3, "S": 74.9, "T2S": 63.5, "S2T": 71.8},
}
# The fixed run recipe (a few million parameters, from scratch). `steps` is sized once by timing, not by results.
RUN = {
    "model": {
        "vocab_size": 1024,
        "d_model": 256,
        "n_layers": 4,
        "n_heads": 4,
        "n_kv_heads": 4,
        "d_ff": 704,
        "max_seq_len": 1024,
        "rope_theta": 100000.0,
        "dtype": "float32",
    },
    "data": {
        "seq_len": 512,
        "batch_size": 8,
        "weights": [1 / 3, 1 / 3, 1 / 3],
        "text_span": [3, 10],
        "speech_span": [2, 6],
    },
    "optim": {"lr": 1e-3, "warmup_steps": 50, "schedule": "cosine", "weight_decay": 0.01},
    "steps": 800,  # ~2.1 s/step on the 2-core machine (40-step timing probe): ~30 min per run
    "log_every": 20,
    "eval_every": 200,
    "checkpoint": {"every": 200, "keep": 2},
}
DOCS = ROOT / "docs" / "experiments"


def _log(msg: str) -> None:
    print(f"[ablation] {msg}", file=sys.stderr, flush=True)


def seed_dir(work: Path, seed: int) -> Path:
    return work / f"seed{seed}"


def run_config(work: Path, name: str, seed: int, steps: int) -> dict:
    cfg = json.loads(json.dumps(RUN))
    cfg["data"].update(corpus=str(work / "corpus" / "corpus"), aligned_as=VARIANTS[name], seed=seed)
    cfg["init"] = {"seed": seed}
    cfg["steps"] = steps
    cfg["out_dir"] = str(seed_dir(work, seed) / "runs" / name)
    return cfg


def _finished(run_dir: Path, steps: int) -> bool:
    s = run_dir / "summary.json"
    return s.is_file() and json.loads(s.read_text()).get("steps") == steps and (run_dir / "seconds.json").is_file()


def train_runs(work: Path, seed: int, steps: int, names=tuple(VARIANTS)) -> None:
    """Train each named run of `seed` that has not finished; its wall time accumulates in seconds.json."""
    import yaml

    for name in names:
        cfg = run_config(work, name, seed, steps)
        run_dir = Path(cfg["out_dir"])
        if not _finished(run_dir, steps):
            run_dir.mkdir(parents=True, exist_ok=True)
            path = seed_dir(work, seed) / "configs" / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            _log(f"seed {seed}: training {name} (aligned_as={VARIANTS[name]}, {steps} steps)")
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "spiritlm_jax.train", "--config", str(path)], check=True)
            spent = time.time() - t0
            prev = json.loads((run_dir / "seconds.json").read_text()) if (run_dir / "seconds.json").is_file() else {}
            (run_dir / "seconds.json").write_text(json.dumps({"seconds": prev.get("seconds", 0) + spent}))


def evaluate_runs(work: Path, seed: int, names=tuple(VARIANTS)) -> dict:
    results = {}
    for name in names:
        out = seed_dir(work, seed) / "eval" / name
        report = out / "report.json"
        if not report.is_file():
            cmd = [
                sys.executable,
                "-m",
                "spiritlm_jax.evaluate",
                "likelihood",
                "--checkpoint",
                str(seed_dir(work, seed) / "runs" / name),
            ]
            cmd += ["--storycloze-dir", str(work / "corpus" / "cloze"), "--out", str(out), "--name", f"ablation-{name}"]
            for s in SETTINGS:
                cmd += ["--setting", s]
            _log(f"seed {seed}: evaluating {name}")
            subprocess.run(cmd, check=True)
        results[name] = json.loads(report.read_text())
    return results


def _row(report: dict, setting: str) -> dict:
    """One run's length-normalised accuracy in % (as `pooled`), 95 % bootstrap interval over items."""
    r = report["settings"][setting]
    lo, hi = r["accuracy_normalized_ci95"]
    pct = lambda x: round(100 * float(x), 1)  # noqa: E731
    return {"accuracy": pct(r["accuracy_normalized"]), "ci_low": pct(lo), "ci_high": pct(hi), "n": r["n"]}


@functools.lru_cache(maxsize=None)
def _labels(cloze_dir: str) -> dict[str, int]:
    """Right-ending index per item id (read once: the report asks for every seed, run and setting)."""
    from spiritlm_jax.evaluation.storycloze import load_storycloze

    return {it.id: it.label for it in load_storycloze(None, cloze_dir)}


def item_correct(work: Path, seed: int, name: str, setting: str) -> dict[str, int]:
    """Per item id: 1 if the length-normalised score picks the right ending (from the eval's score cache)."""
    labels = _labels(str(work / "corpus" / "cloze"))
    scores = json.loads((seed_dir(work, seed) / "eval" / name / f"scores_{setting}.json").read_text())
    out = {}
    for item_id, r in scores.items():
        if isinstance(r, str):
            continue
        sums, lens = np.asarray(r[0], np.float64), np.maximum(np.asarray(r[1], np.float64), 1)
        out[item_id] = int(np.argmax(sums / lens) == labels[item_id])
    return out


def _matrix(correct_by_seed: list[dict[str, int]], ids: list[str]) -> np.ndarray:
    return np.asarray([[c[i] for i in ids] for c in correct_by_seed], np.float64)  # [seeds, items]


def _bootstrapped(m_si: np.ndarray, key: str, n_boot: int = 2000, rng_seed: int = 0) -> dict:
    """Mean of m[seeds, items] in %, with a 95 % interval from a two-level bootstrap: seeds drawn with
    replacement, then items drawn with replacement (the same items for every seed: one eval set)."""
    rng = np.random.default_rng(rng_seed)
    s_idx = rng.integers(0, m_si.shape[0], (n_boot, m_si.shape[0]))
    i_idx = rng.integers(0, m_si.shape[1], (n_boot, m_si.shape[1]))
    boots = np.asarray([m_si[s_idx[b]][:, i_idx[b]].mean() for b in range(n_boot)])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    pct = lambda x: round(100 * float(x), 1)  # noqa: E731
    return {
        key: pct(m_si.mean()),
        "ci_low": pct(lo),
        "ci_high": pct(hi),
        "n": m_si.shape[1],
        "seeds": m_si.shape[0],
        f"per_seed_{key}": [pct(x) for x in m_si.mean(1)],
    }


def pooled(correct_by_seed: list[dict[str, int]]) -> dict:
    """Mean accuracy (%) over seeds, with a 95 % interval from a two-level bootstrap over seeds and items."""
    ids = sorted(set.intersection(*(set(c) for c in correct_by_seed)))
    return _bootstrapped(_matrix(correct_by_seed, ids), "accuracy")


def paired_difference(a_by_seed: list[dict[str, int]], b_by_seed: list[dict[str, int]]) -> dict:
    """Accuracy of run a minus run b (points), paired by seed and item, with the same two-level bootstrap:
    the interval says whether a beats b on this eval set across training seeds."""
    ids = sorted(set.intersection(*(set(c) for c in a_by_seed + b_by_seed)))
    return _bootstrapped(_matrix(a_by_seed, ids) - _matrix(b_by_seed, ids), "difference")


def evaluated(work: Path, seeds: list[int]) -> dict[int, list[str]]:
    """Per seed, the runs that have an eval report (a seed may hold fewer runs than another)."""

    def scored(seed: int, name: str) -> bool:
        return (seed_dir(work, seed) / "eval" / name / "report.json").is_file()

    have = {seed: [n for n in VARIANTS if scored(seed, n)] for seed in seeds}
    return {seed: names for seed, names in have.items() if names}


def _seconds(work: Path, seed: int, name: str) -> float | None:
    path = seed_dir(work, seed) / "runs" / name / "seconds.json"
    return round(json.loads(path.read_text())["seconds"], 1) if path.is_file() else None


def write_report(work: Path, seeds: list[int], steps: int, docs: Path = DOCS) -> dict:
    """docs/experiments/interleaving_ablation.json from the evaluated runs of `seeds`: `runs` is the mean
    over the seeds that hold the run (interval over seeds and items), `per_seed` holds each seed's runs in
    the same shape as a one-seed report, `differences` pairs interleaved and pairs against none by seed and
    item (over the seeds that hold both)."""
    have = evaluated(work, seeds)
    if not have:
        raise SystemExit(f"no evaluated runs under {work} for seeds {seeds}: run the runs and eval stages first")
    tokens = steps * RUN["data"]["batch_size"] * RUN["data"]["seq_len"]
    per_seed = {}
    for seed, names in have.items():
        reports = {n: json.loads((seed_dir(work, seed) / "eval" / n / "report.json").read_text()) for n in names}
        per_seed[str(seed)] = {"runs": {n: {s: _row(rep, s) for s in SETTINGS} for n, rep in reports.items()}}
    seeds_of = {n: [seed for seed, names in have.items() if n in names] for n in VARIANTS}
    correct = {
        n: {s: {seed: item_correct(work, seed, n, s) for seed in seeds_of[n]} for s in SETTINGS}
        for n in VARIANTS
        if seeds_of[n]
    }
    runs = {
        n: {s: pooled(list(c[s].values())) | {"seed_list": seeds_of[n]} for s in SETTINGS} for n, c in correct.items()
    }
    differences = {}
    for a in ("interleaved", "pairs"):
        both = [seed for seed in seeds_of[a] if seed in seeds_of["none"]]
        if both:
            differences[f"{a}_minus_none"] = {
                s: paired_difference([correct[a][s][k] for k in both], [correct["none"][s][k] for k in both])
                | {"seed_list": both}
                for s in SETTINGS
            }
    out = {
        "runs": runs,
        "per_seed": per_seed,
        "differences": differences,
        "seeds": sorted(have),
        "corpus_seed": 0,
        "tokens_per_run": tokens,
        "seconds_per_run": {str(seed): {n: _seconds(work, seed, n) for n in names} for seed, names in have.items()},
        "held_out_loss": {str(seed): final_eval_losses(work, seed, names) for seed, names in have.items()},
        "paper": PAPER,
    }
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "interleaving_ablation.json").write_text(json.dumps(out, indent=2) + "\n")
    loss_curves(work, have, docs / "interleaving_ablation_loss.png")
    return out


def _cell(r: dict, key: str = "accuracy") -> str:
    return f"{r[key]:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"


def markdown(out: dict) -> str:
    """The report's tables as markdown (pooled, differences, per seed, held-out loss), for the doc."""
    names = {"T2S": "T→S", "S2T": "S→T"}
    head = "| run | " + " | ".join(names.get(s, s) for s in SETTINGS) + " |\n|---|" + "---|" * len(SETTINGS)
    lines = [
        "Mean over seeds (95 % interval, two-level bootstrap over seeds and items; paper Table 6 in brackets):",
        "",
    ]
    lines.append(head)
    for n, r in out["runs"].items():
        seeds = ",".join(map(str, r["T"]["seed_list"]))
        cells = [f"{_cell(r[s])} ({PAPER[n][s]})" for s in SETTINGS]
        lines.append(f"| {n} (seeds {seeds}) | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences in points (same seeds and items; 95 % interval):", "", head]
    for k, r in out["differences"].items():
        seeds = ",".join(map(str, r["T"]["seed_list"]))
        lines.append(
            f"| {k.replace('_', ' ')} (seeds {seeds}) | "
            + " | ".join(_cell(r[s], "difference") for s in SETTINGS)
            + " |"
        )
    cols = " | ".join(names.get(s, s) for s in SETTINGS)
    lines += ["", "Per seed (95 % interval over items):", ""]
    lines += [f"| seed | run | {cols} |", "|---|---|" + "---|" * len(SETTINGS)]
    for seed, d in out["per_seed"].items():
        for n, r in d["runs"].items():
            lines.append(f"| {seed} | {n} | " + " | ".join(_cell(r[s]) for s in SETTINGS) + " |")
    groups = " | ".join(LOSS_GROUPS)
    lines += ["", "Held-out loss at the last evaluation (nats/token) and wall time:", ""]
    lines += [f"| seed | run | {groups} | seconds |", "|---|---|" + "---|" * (len(LOSS_GROUPS) + 1)]
    for seed, d in out["held_out_loss"].items():
        for n, g in d.items():
            secs = out["seconds_per_run"][seed].get(n)
            lines.append(
                f"| {seed} | {n} | " + " | ".join(f"{g.get(x, float('nan')):.3f}" for x in LOSS_GROUPS) + f" | {secs} |"
            )
    return "\n".join(lines) + "\n"


LOSS_GROUPS = ("text", "speech", "interleaved")  # the trainer's loss groups (metrics loss_<group>)


def _metrics(work: Path, seed: int, name: str) -> list[dict]:
    path = seed_dir(work, seed) / "runs" / name / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln]


def final_eval_losses(work: Path, seed: int, names=tuple(VARIANTS)) -> dict:
    """Held-out loss per group at the last evaluation of each run (nats/token)."""
    out = {}
    for name in names:
        evals = [r for r in _metrics(work, seed, name) if "eval_loss" in r]
        last = evals[-1] if evals else {}
        out[name] = {g: round(last[f"eval_loss_{g}"], 4) for g in LOSS_GROUPS if f"eval_loss_{g}" in last}
    return out


def loss_curves(work: Path, have: dict[int, list[str]], png: Path) -> None:
    """Training (top) and held-out (bottom) loss per loss group; one line per run and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 6.4), sharey="row")
    colors = dict(zip(VARIANTS, ("tab:blue", "tab:orange", "tab:green")))
    for name in VARIANTS:
        for k, seed in enumerate(s for s in have if name in have[s]):
            recs = _metrics(work, seed, name)
            for row, prefix in enumerate(("loss_", "eval_loss_")):
                for ax, g in zip(axes[row], LOSS_GROUPS):
                    pts = [(r["step"], r[prefix + g]) for r in recs if prefix + g in r]
                    if pts:
                        label = name if k == 0 else None
                        ax.plot(*zip(*pts), color=colors[name], alpha=0.85, lw=1.0, label=label)
    for row, what in enumerate(("training loss", "held-out loss")):
        for ax, g in zip(axes[row], LOSS_GROUPS):
            ax.set_title(f"{what}: {g}")
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("step")
        axes[row][0].set_ylabel("nats / token")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/ablation", help="working directory (corpus, seed<N>/runs, seed<N>/eval)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    ap.add_argument(
        "--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS), help="runs to train and score"
    )
    ap.add_argument("--steps", type=int, default=RUN["steps"])
    ap.add_argument(
        "--stage",
        choices=("corpus", "runs", "eval", "report", "all"),
        default="all",
        help="report: only write the report from the runs already scored",
    )
    args = ap.parse_args(argv)
    work = Path(args.work)
    names = [n for n in VARIANTS if n in args.variants]
    if args.stage != "report":
        summary = build_corpus(work / "corpus", CorpusConfig(seed=0))
        _log(f"corpus: {json.dumps(summary['counts'])}, hours of audio {json.dumps(summary['hours'])}")
        if args.stage == "corpus":
            return 0
        for seed in args.seeds:  # seed by seed: each seed's runs and eval finish before the next starts
            train_runs(work, seed, args.steps, names)
            if args.stage != "runs":
                evaluate_runs(work, seed, names)
        if args.stage != "all":
            return 0
    out = write_report(work, args.seeds, args.steps)
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
