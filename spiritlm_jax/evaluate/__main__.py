"""`python -m spiritlm_jax.evaluate likelihood ...`: likelihood-pair benchmarks over any checkpoint.

    python -m spiritlm_jax.evaluate likelihood --checkpoint runs/demo --items items.jsonl \
        --setting T --setting S --out eval/demo
    python -m spiritlm_jax.evaluate likelihood --checkpoint DIR --zerospeech lexical/dev --setting S --out eval/swuggy

Writes <out>/report.json, report.md and report.png (when matplotlib is installed). Scores are cached
per setting in <out>/scores_<setting>.json, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _report(out: Path, name: str, rows: dict) -> None:
    (out / "report.json").write_text(json.dumps({"task": name, "settings": rows}, indent=2))
    lines = [f"# {name}", "", "| setting | n | bad | accuracy | 95% CI | normalised | 95% CI |", "|---|---|---|---|---|---|---|"]
    for s, r in rows.items():
        def f(k):
            return "n/a" if r.get(k) is None else f"{r[k]:.3f}"

        def ci(k):
            return "n/a" if r.get(k) is None else f"[{r[k][0]:.3f}, {r[k][1]:.3f}]"

        lines.append(f"| {s} | {r['n']} | {r['bad']} | {f('accuracy')} | {ci('accuracy_ci95')} | "
                     f"{f('accuracy_normalized')} | {ci('accuracy_normalized_ci95')} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no report.png (pip install -e '.[eval]')", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(rows), 3))
    names = list(rows)
    ax.bar(names, [rows[s].get("accuracy_normalized") or 0 for s in names])
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (length-normalised)")
    ax.set_title(name)
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=100)
    plt.close(fig)


def likelihood(args) -> int:
    from spiritlm_jax.evaluate.likelihood import Encoder, accuracy, load_items, read_zerospeech_gold, score_items
    from spiritlm_jax.generation import SpiritLM

    items = read_zerospeech_gold(args.zerospeech) if args.zerospeech else load_items(args.items)
    lm = SpiritLM.from_checkpoint(args.checkpoint)
    enc = Encoder(lm.tokenizer, lm.speech_tokenizer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for setting in args.setting:
        cache = out / f"scores_{setting}.json"
        done = json.loads(cache.read_text()) if cache.is_file() else {}
        todo = [it for it in items if it.id not in done]
        for start in range(0, len(todo), args.chunk):
            part = todo[start:start + args.chunk]
            done.update(score_items(lm.model, lm.params, part, enc, setting, args.batch_size))
            cache.write_text(json.dumps(done))
            print(f"{setting}: {min(start + args.chunk, len(todo))}/{len(todo)} items scored", flush=True)
        rows[setting] = accuracy(done, items)
        r = rows[setting]
        print(f"{setting}: accuracy {r['accuracy']} (normalised {r['accuracy_normalized']}) over {r['n']} items, "
              f"{r['bad']} bad")
    _report(out, args.name or Path(args.items or args.zerospeech).stem, rows)
    print(f"report: {out / 'report.md'}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spiritlm_jax.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="task", required=True)
    lk = sub.add_parser("likelihood", help="likelihood-pair accuracy (sWUGGY, sBLIMP, StoryCloze, ...)")
    lk.add_argument("--checkpoint", required=True)
    src = lk.add_mutually_exclusive_group(required=True)
    src.add_argument("--items", help="manifest JSONL (see spiritlm_jax/evaluate/likelihood.py)")
    src.add_argument("--zerospeech", help="a ZeroSpeech 2021 lexical/syntactic folder with gold.csv")
    lk.add_argument("--setting", action="append", choices=["T", "S", "T2S", "S2T"], required=True)
    lk.add_argument("--out", required=True)
    lk.add_argument("--name", default=None)
    lk.add_argument("--batch-size", type=int, default=16)
    lk.add_argument("--chunk", type=int, default=256, help="items scored between cache writes")
    args = ap.parse_args(argv)
    try:
        return likelihood(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
