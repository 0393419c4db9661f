"""Why T (text -> text) differed between the ablation's runs: the same checkpoints scored two ways.

    python -m benchmarks.interleaving_ablation.t_gap [--work runs/ablation] [--seed 0]

- "alone": the ending encoded on its own after a [Text] marker, the marker dropped (how T was scored
  before the fix): its first word has no '▁' piece, so the scored text reads 'kitchen.Then', a join that
  no text training document holds; only span-initial words of interleaved data look like it.
- "one text": context and ending encoded as one text (what `evaluate likelihood` does now, and what a
  training document of the whole story holds).
Per run: accuracy (length-normalised) both ways, the mean log-probability of the ending's first token
both ways, and the mean per-token log-probability of the rest (equal both ways: the same pieces).
Writes docs/experiments/interleaving_ablation_t_gap.json.
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

from benchmarks.interleaving_ablation.__main__ import DOCS, VARIANTS, seed_dir  # noqa: E402


def analyse(work: Path, seed: int) -> dict:
    from spiritlm_jax.evaluation.likelihood import Encoder
    from spiritlm_jax.evaluation.scoring import score
    from spiritlm_jax.evaluation.storycloze import load_storycloze
    from spiritlm_jax.inference import SpiritLM

    items = load_storycloze(None, str(work / "corpus" / "cloze"))
    out: dict = {"n": len(items), "runs": {}}
    for name in VARIANTS:
        lm = SpiritLM.from_checkpoint(str(seed_dir(work, seed) / "runs" / name))
        enc = Encoder(lm.tokenizer)
        bos = [lm.tokenizer.bos_id]
        ways = {
            "alone": lambda it, c: enc.tokens(c, "text")[1:],
            "one_text": lambda it, c: enc.continuation(it.context, c),
        }
        res = {}
        for way, cont_of in ways.items():
            prompts, conts = [], []
            for it in items:
                for c in it.candidates:
                    prompts.append(bos + enc.tokens(it.context, "text"))
                    conts.append(cont_of(it, c))
            firsts, _ = score(lm.model, lm.params, prompts, [c[:1] for c in conts])
            sums, lens = score(lm.model, lm.params, prompts, conts)
            norm = (sums / lens).reshape(len(items), -1)
            labels = np.asarray([it.label for it in items])
            right = np.take_along_axis(norm, labels[:, None], 1)[:, 0]
            wrong = np.where(np.arange(norm.shape[1])[None] == labels[:, None], -np.inf, norm).max(1)
            res[way] = {
                "accuracy": round(100 * float(np.mean(norm.argmax(1) == labels)), 1),
                "first_token_logprob": round(float(np.mean(firsts)), 3),
                "rest_logprob_per_token": round(float(np.mean((sums - firsts) / np.maximum(lens - 1, 1))), 3),
                "margin_mean": round(float(np.mean(right - wrong)), 4),
            }
        out["runs"][name] = res
    it = items[0]
    tok, ending = lm.tokenizer, it.candidates[it.label]
    out["example"] = {
        "context_end": it.context["text"][-30:],
        "ending": ending["text"][:40],
        "alone_pieces": [tok.id_to_token(i) for i in enc.tokens(ending, "text")[1:6]],
        "one_text_pieces": [tok.id_to_token(i) for i in enc.continuation(it.context, ending)[:5]],
    }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/ablation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = analyse(Path(args.work), args.seed)
    out["seed"] = args.seed
    (DOCS / "interleaving_ablation_t_gap.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
