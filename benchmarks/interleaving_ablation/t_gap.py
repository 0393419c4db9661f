"""Why T (text -> text) differed between the ablation's runs: the same checkpoints scored two ways.

    python -m benchmarks.interleaving_ablation.t_gap [--work runs/ablation] [--seed 0]

- "alone": how T was scored before the fix: the ending encoded on its own as '▁ [Text] ending', and the
  first id dropped as if it were the marker; it was the tokenizer's lead '▁', so a [Text] marker was scored
  inside the text span, followed by the ending's first word without its '▁' piece. No text training
  document holds a [Text] marker after text.
- "one text": context and ending encoded as one text (what `evaluate likelihood` does now, and what a
  training document of the whole story holds).
Per run: accuracy (length-normalised) both ways, the mean log-probability of the first scored token
both ways ([Text] vs the ending's first piece), the mean per-token log-probability of the rest, and the
mean margin (right minus best wrong, length-normalised).
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
        bos = [lm.tokenizer.bos_id] + lm.tokenizer.lead_ids
        ways = {
            "alone": lambda it, c: enc.tokens(c, "text"),
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
        "alone_pieces": [tok.id_to_token(i) for i in enc.tokens(ending, "text")[:5]],
        "one_text_pieces": [tok.id_to_token(i) for i in enc.continuation(it.context, ending)[:5]],
    }
    return out


def piece_exposure(work: Path, seed: int = 0) -> dict:
    """Per variant, over one epoch of its training documents (text pool + the aligned pool as that variant
    uses it): how often a [Text] marker follows a text token (what the old T scoring asked the model to
    predict) per 1,000 [Text] markers, and how often the first content piece of the held-out endings
    occurs, in each encoding, per 1,000 text tokens. No model needed."""
    from collections import Counter

    from benchmarks.interleaving_ablation.__main__ import RUN
    from spiritlm_jax.data.interleave import encode_documents
    from spiritlm_jax.data.sources import read_examples
    from spiritlm_jax.evaluation.likelihood import Encoder
    from spiritlm_jax.evaluation.storycloze import load_storycloze
    from spiritlm_jax.tokens import SpiritTokenizer

    corpus = work / "corpus" / "corpus"
    tok = SpiritTokenizer(corpus / "tokenizer.model")
    enc = Encoder(tok)
    items = load_storycloze(None, str(work / "corpus" / "cloze"))
    first = {
        "alone": Counter(enc.tokens(c, "text")[1] for it in items for c in it.candidates),  # after the marker
        "one_text": Counter(enc.continuation(it.context, c)[0] for it in items for c in it.candidates),
    }
    examples = read_examples(corpus / "train" / "text.jsonl.gz") + read_examples(corpus / "train" / "aligned.jsonl.gz")
    spans = dict(text_span=tuple(RUN["data"]["text_span"]), speech_span=tuple(RUN["data"]["speech_span"]))
    out = {}
    for name, aligned_as in VARIANTS.items():
        counts, n_text, markers, after_text = Counter(), 0, 0, 0
        marker = tok.layout.text_marker_id
        for i, ex in enumerate(examples):
            rng = np.random.default_rng([seed, i])
            for doc in encode_documents(ex, tok, rng, aligned_as=aligned_as, **spans):
                toks = [int(t) for t in doc.enc.tokens]
                ids = [t for t in toks if tok.layout.is_text_id(t)]
                n_text += len(ids)
                counts.update(ids)
                for a, b in zip(toks, toks[1:]):
                    if b == marker:
                        markers += 1
                        after_text += tok.layout.is_text_id(a) and a not in tok.lead_ids
        out[name] = {
            way: round(1000 * sum(counts[t] * w for t, w in c.items()) / sum(c.values()) / n_text, 3)
            for way, c in first.items()
        }
        out[name].update(text_tokens=n_text, text_markers=markers, text_marker_after_text=after_text)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/ablation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exposure-only", action="store_true", help="only the byte-level counts (no checkpoints)")
    args = ap.parse_args(argv)
    out = {} if args.exposure_only else analyse(Path(args.work), args.seed)
    out["piece_exposure_per_1000_text_tokens"] = piece_exposure(Path(args.work), args.seed)
    out["seed"] = args.seed
    (DOCS / "interleaving_ablation_t_gap.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
