"""How much more training would speech (S) need? An estimate from the ablation's held-out loss curves.

    python -m benchmarks.interleaving_ablation.scale [--work runs/ablation]

The stories' words are the same in text and speech, so a model that knew speech as well as it knows text
would pay about the same nats per *word* in both. Per word: held-out loss per token x tokens per word
(text: BPE pieces per word; speech: deduplicated units per word, from the corpus counts). The held-out
speech loss at steps 200/400/600/800 of every scored run is fitted with L(D) = E + A * D^-alpha (D =
training tokens; E = the per-unit floor implied by text's per-word loss at the end of the runs), and
the fit is solved for the tokens at which speech's per-word loss comes within 4x and 2x of text's.
A rough estimate: four points per run, a cosine schedule that ends at step 800 (its last points fall
faster than a constant-rate run would), one model size (capacity is assumed not to bind).
Writes docs/experiments/interleaving_ablation_scale.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.interleaving_ablation.__main__ import DOCS, RUN, VARIANTS, _metrics, seed_dir  # noqa: E402


def estimate(work: Path) -> dict:
    counts = json.loads((work / "corpus" / "corpus.done").read_text())
    words = counts["words"]["text"] + counts["words"]["aligned"]
    pieces_per_word = (counts["tokens"]["text"] + counts["tokens"]["aligned"]["text"]) / words
    units_per_word = (counts["tokens"]["speech"] + counts["tokens"]["aligned"]["speech"]) / words
    tokens_per_step = RUN["data"]["batch_size"] * RUN["data"]["seq_len"]
    points, text_end = [], []
    seeds = sorted(int(p.name[4:]) for p in work.glob("seed*") if p.is_dir() and p.name[4:].isdigit())
    for seed in seeds:  # seed<N> run folders only: the work dir also holds logs such as seed2.log
        for name in VARIANTS:
            if not (seed_dir(work, seed) / "runs" / name / "metrics.jsonl").is_file():
                continue
            evals = [r for r in _metrics(work, seed, name) if "eval_loss_speech" in r]
            if not evals or evals[-1]["step"] < RUN["steps"]:
                continue
            points += [(r["step"] * tokens_per_step, r["eval_loss_speech"]) for r in evals]
            text_end.append(evals[-1]["eval_loss_text"])
    if not points:
        raise SystemExit(f"no finished runs under {work}")
    d, loss = (np.asarray(x, np.float64) for x in zip(*points))
    text_per_word = float(np.mean(text_end)) * pieces_per_word
    floor = text_per_word / units_per_word  # nats per unit if speech cost what text costs per word
    slope, intercept = np.polyfit(np.log(d), np.log(loss - floor), 1)
    alpha, a = -slope, float(np.exp(intercept))

    def tokens_for(per_word: float) -> float:
        return float((a / (per_word / units_per_word - floor)) ** (1 / alpha))

    end = loss[d == d.max()]
    return {
        "runs": len(text_end),
        "pieces_per_word": round(pieces_per_word, 3),
        "units_per_word": round(units_per_word, 3),
        "text_nats_per_word_at_end": round(text_per_word, 3),
        "speech_nats_per_word_at_end": round(float(end.mean()) * units_per_word, 3),
        "tokens_per_run": int(d.max()),
        "fit": {"floor_nats_per_unit": round(floor, 4), "A": round(a, 3), "alpha": round(alpha, 3)},
        "tokens_for_speech_per_word_within": {f"{k}x_text": round(tokens_for(k * text_per_word), -5) for k in (4, 2)},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/ablation")
    args = ap.parse_args(argv)
    out = estimate(Path(args.work))
    (DOCS / "interleaving_ablation_scale.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
