"""The interleaving ablation, end to end: corpus, three training runs, evaluation, report.

    python -m benchmarks.interleaving_ablation [--work runs/ablation] [--seed 0] [--steps N] [--stage all]

Stages (each resumes: a finished stage is skipped, an interrupted run continues from its checkpoint,
scored items are cached):
1. corpus: benchmarks/interleaving_ablation/corpus.py (stories, espeak-ng speech, units, prepare).
2. runs: `python -m spiritlm_jax.train` three times on the same corpus, same model, steps, batch, seed
   and mixture weights; only `data.aligned_as` differs: none (= separate), pairs, interleaved.
3. eval: `python -m spiritlm_jax.evaluate likelihood --storycloze-dir <work>/corpus/cloze` in T, S,
   T2S and S2T for each run.
4. report: docs/experiments/interleaving_ablation.{json,md tables} and loss-curve PNGs.

The protocol (sizes, model, steps) is fixed in RUN and CorpusConfig below and in
docs/experiments/interleaving_ablation.md; it is not tuned on the results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

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


def run_config(work: Path, name: str, seed: int, steps: int) -> dict:
    cfg = json.loads(json.dumps(RUN))
    cfg["data"].update(corpus=str(work / "corpus" / "corpus"), aligned_as=VARIANTS[name], seed=seed)
    cfg["init"] = {"seed": seed}
    cfg["steps"] = steps
    cfg["out_dir"] = str(work / "runs" / name)
    return cfg


def _finished(run_dir: Path, steps: int) -> bool:
    s = run_dir / "summary.json"
    return s.is_file() and json.loads(s.read_text()).get("steps") == steps and (run_dir / "seconds.json").is_file()


def train_runs(work: Path, seed: int, steps: int) -> dict:
    import yaml

    seconds = {}
    for name in VARIANTS:
        cfg = run_config(work, name, seed, steps)
        run_dir = Path(cfg["out_dir"])
        if not _finished(run_dir, steps):
            run_dir.mkdir(parents=True, exist_ok=True)
            path = work / "configs" / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            _log(f"training {name} (aligned_as={VARIANTS[name]}, {steps} steps)")
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "spiritlm_jax.train", "--config", str(path)], check=True)
            spent = time.time() - t0
            prev = json.loads((run_dir / "seconds.json").read_text()) if (run_dir / "seconds.json").is_file() else {}
            (run_dir / "seconds.json").write_text(json.dumps({"seconds": prev.get("seconds", 0) + spent}))
        seconds[name] = json.loads((run_dir / "seconds.json").read_text())["seconds"]
    return seconds


def evaluate_runs(work: Path) -> dict:
    results = {}
    for name in VARIANTS:
        out = work / "eval" / name
        report = out / "report.json"
        if not report.is_file():
            cmd = [
                sys.executable,
                "-m",
                "spiritlm_jax.evaluate",
                "likelihood",
                "--checkpoint",
                str(work / "runs" / name),
            ]
            cmd += ["--storycloze-dir", str(work / "corpus" / "cloze"), "--out", str(out), "--name", f"ablation-{name}"]
            for s in SETTINGS:
                cmd += ["--setting", s]
            _log(f"evaluating {name}")
            subprocess.run(cmd, check=True)
        results[name] = json.loads(report.read_text())
    return results


def _row(report: dict, setting: str) -> dict:
    r = report["settings"][setting]
    lo, hi = r["accuracy_normalized_ci95"]
    return {"accuracy": r["accuracy_normalized"], "ci_low": lo, "ci_high": hi, "n": r["n"]}


def write_report(work: Path, results: dict, seconds: dict, seed: int, steps: int, docs: Path = DOCS) -> dict:
    tokens = steps * RUN["data"]["batch_size"] * RUN["data"]["seq_len"]
    out = {
        "runs": {name: {s: _row(rep, s) for s in SETTINGS} for name, rep in results.items()},
        "tokens_per_run": tokens,
        "seconds_per_run": {k: round(v, 1) for k, v in seconds.items()},
        "seed": seed,
        "paper": PAPER,
    }
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "interleaving_ablation.json").write_text(json.dumps(out, indent=2) + "\n")
    _loss_curves(work, docs / "interleaving_ablation_loss.png")
    return out


def _loss_curves(work: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ("loss_text", "loss_speech", "loss_aligned")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for name in VARIANTS:
        recs = [json.loads(ln) for ln in (work / "runs" / name / "metrics.jsonl").read_text().splitlines() if ln]
        for ax, g in zip(axes, groups):
            pts = [(r["step"], r[g]) for r in recs if g in r]
            if pts:
                ax.plot(*zip(*pts), label=name)
    for ax, g in zip(axes, groups):
        ax.set_title(g.replace("loss_", "training loss: "))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("nats / token")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/ablation", help="working directory (corpus, runs, eval)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=RUN["steps"])
    ap.add_argument("--stage", choices=("corpus", "runs", "eval", "all"), default="all")
    args = ap.parse_args(argv)
    work = Path(args.work)
    summary = build_corpus(work / "corpus", CorpusConfig(seed=args.seed))
    _log(f"corpus: {json.dumps(summary['counts'])}, hours of audio {json.dumps(summary['hours'])}")
    if args.stage == "corpus":
        return 0
    seconds = train_runs(work, args.seed, args.steps)
    if args.stage == "runs":
        return 0
    results = evaluate_runs(work)
    if args.stage == "eval":
        return 0
    out = write_report(work, results, seconds, args.seed, args.steps)
    print(json.dumps(out["runs"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
