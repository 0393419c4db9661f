"""Throughput of the data pipeline on CPU over a synthetic corpus (ArrayRecord shards).

    python benchmarks/data_pipeline.py [--n 1500] [--seq-len 4096] [--batch 4] [--steps 30]

Prints examples/s and tokens/s for encoding alone (read + JSON + interleave + tokenize, one thread)
and for the whole pipeline (mixture, packing, batching) with 0 and 2 reader threads, plus the
fraction of padding in the packed rows. Sizes mimic the paper's data: text documents of ~300
words, speech-only clips of 5-30 s, aligned clips of 10-30 s at ~2.5 words/s (HuBERT at 25 Hz).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from spiritlm_jax.data.pipeline import DEMO_CORPUS, DataConfig, build_train_iterator, example_dataset
from spiritlm_jax.data.sources import write_array_record

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have "
    "an they you were her she there been one all we their has would when if so no will more time about"
).split()


def synth_corpus(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    text = [{"kind": "text", "text": " ".join(rng.choice(WORDS, int(rng.integers(100, 500))))} for _ in range(n)]
    speech = [
        {"kind": "speech", "hubert": rng.integers(0, 501, int(rng.uniform(5, 30) * 25)).tolist()} for _ in range(n)
    ]
    aligned = []
    for _ in range(n):
        dur = rng.uniform(10, 30)
        k = int(dur * 2.5)
        starts = np.sort(rng.uniform(0, dur - 0.4, k))
        words = [[str(rng.choice(WORDS)), round(float(s), 3), round(float(s) + 0.3, 3)] for s in starts]
        aligned.append({"kind": "aligned", "words": words, "hubert": rng.integers(0, 501, int(dur * 25)).tolist()})
    for kind, exs in (("text", text), ("speech", speech), ("aligned", aligned)):
        write_array_record(root / "train" / f"{kind}-00000.array_record", exs)
    (root / "tokenizer.model").write_bytes((DEMO_CORPUS / "tokenizer.model").read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500, help="examples per kind")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        synth_corpus(root, args.n)
        cfg = DataConfig(corpus=str(root), seq_len=args.seq_len, batch_size=args.batch, read_threads=0)
        ds = example_dataset(cfg)
        for j in range(50):  # warm-up: open readers, load the SentencePiece model
            ds[j]
        t0 = time.perf_counter()
        n_ex, n_tok = 600, 0
        for j in range(50, 50 + n_ex):
            n_tok += sum(len(w.tokens) for w in ds[j]["windows"])
        dt = time.perf_counter() - t0
        print(f"encode only (1 thread): {n_ex / dt:8.1f} examples/s  {n_tok / dt:10.0f} tokens/s")
        for threads in (0, 2):
            it = build_train_iterator(
                DataConfig(corpus=str(root), seq_len=args.seq_len, batch_size=args.batch, read_threads=threads)
            )
            next(it)  # start-up
            s0 = it.get_state()["parent"]["next_index"]
            t0 = time.perf_counter()
            real = total = 0
            for _ in range(args.steps):
                b = next(it)
                real += int((b["segment_ids"] > 0).sum())
                total += b["tokens"].size
            dt = time.perf_counter() - t0
            n_ex = it.get_state()["parent"]["next_index"] - s0
            print(
                f"pipeline, {threads} reader threads: {n_ex / dt:8.1f} examples/s  {real / dt:10.0f} tokens/s "
                f"({args.steps / dt:.2f} batches/s of {args.batch}x{args.seq_len}); padding {1 - real / total:.1%}"
            )


if __name__ == "__main__":
    main()
