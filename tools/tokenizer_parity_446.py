"""SpiritTokenizer against transformers 4.46's slow LlamaTokenizer (the reference's), per release layout.

    python -m venv /tmp/tf446 && /tmp/tf446/bin/pip install "transformers==4.46.3" sentencepiece protobuf numpy
    python tools/tokenizer_parity_446.py --python /tmp/tf446/bin/python [--prompts 300 --decodes 300]

transformers 5 has no slow tokenizer and the reference pinned 4.46, so this one-off check runs 4.46 in a
throw-away environment (no torch needed; about a minute to install) instead of in CI. It builds the
release-like tokenizers of tests/release_tokenizer.py (a small LLaMA-like SentencePiece model padded to
32000 pieces; (a) Spirit LM tokens inside tokenizer.model with fillers, BASE and EXPRESSIVE; (b) added
tokens in tokenizer_config.json, legacy and non-legacy) and counts agreements: prompt ids
(`tok(prompt)`), decoded prompts, and decoded random id sequences (`decode(ids, skip_special_tokens=True,
clean_up_tokenization_spaces=False)`, what the reference slices its outputs from).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spiritlm_jax.tokens import SpiritTokenizer  # noqa: E402
from tests import release_tokenizer as R  # noqa: E402

REFERENCE = r"""
import json, sys
from transformers import LlamaTokenizer
job = json.load(open(sys.argv[1]))
out = {}
for name, case in job.items():
    tok = LlamaTokenizer.from_pretrained(case["dir"], add_bos_token=True, add_eos_token=False)
    kw = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
    ids = [tok(p)["input_ids"] for p in case["prompts"]]
    out[name] = {"ids": ids, "decoded": [tok.decode(i, **kw) for i in ids],
                 "random": [tok.decode(i, **kw) for i in case["random_ids"]]}
json.dump(out, open(sys.argv[2], "w"))
"""


def random_ids(n: int, vocab: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 30))
        pieces = rng.integers(0, 300, k)  # the trained pieces (English, bytes, specials)
        special = rng.integers(32000, vocab, k)
        out.append([int(p if rng.random() < 0.6 else s) for p, s in zip(pieces, special)])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help="a Python with transformers==4.46.x and sentencepiece")
    ap.add_argument("--prompts", type=int, default=300)
    ap.add_argument("--decodes", type=int, default=300)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        padded = R.pad_pieces(R.train_llama_like(d / "base"), d / "padded.model")
        layouts = {
            "in_model_base": (R.in_model_layout, False, None),
            "in_model_expressive": (R.in_model_layout, True, None),
            "added_legacy_expressive": (R.added_token_dir, True, None),
            "added_nonlegacy_base": (R.added_token_dir, False, False),
        }
        job = {}
        for name, (build, expressive, legacy) in layouts.items():
            path = build(padded, d / name, expressive, legacy)
            vocab = 32768 if expressive else 32512
            top = vocab if name.startswith("in_model") else (32667 if expressive else 32503)  # fillers: in-model only
            prompts = R.PROMPTS + (R.EXPRESSIVE_PROMPTS if expressive else []) + R.random_prompts(a.prompts, expressive)
            job[name] = {
                "dir": str(path),
                "prompts": prompts,
                "random_ids": random_ids(a.decodes, top, 7),
            }
        (d / "job.json").write_text(json.dumps(job))
        subprocess.run([a.python, "-c", REFERENCE, str(d / "job.json"), str(d / "ref.json")], check=True)
        ref = json.loads((d / "ref.json").read_text())
        for name, case in job.items():
            tok = SpiritTokenizer.from_dir(case["dir"])
            r = ref[name]
            ids = sum(tok.encode(p) == i for p, i in zip(case["prompts"], r["ids"]))
            dec = sum(tok.reference_decode(i) == s for i, s in zip(r["ids"], r["decoded"]))
            rnd = sum(tok.reference_decode(i) == s for i, s in zip(case["random_ids"], r["random"]))
            n_rnd = len(case["random_ids"])
            n = len(case["prompts"])
            print(
                f"{name:26s} ({tok.source}, legacy={tok.legacy}): prompt ids {ids}/{n}, decoded prompts {dec}/{n}, "
                f"decoded random ids {rnd}/{n_rnd}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
