"""Forced-alignment accuracy on speech with known word times: espeak-ng word-by-word concatenations
with random pauses (tools/build_demo_corpus.py's `synth_aligned`: band-limited through 8 kHz, silence
trimmed per word, seeded 60-200 ms pauses), several voices and rates; and CPU speed.

    python benchmarks/alignment.py [--sentences 13] [--baseline] [--ctc DIR]

Per voice/rate: success rate (an alignment with every word), mean / median / 90th-percentile |start
error| and |end error| over the words of the successful alignments, and the share of starts within
50 ms. `--baseline` also runs pocketsphinx's decoder with its default beams (the issue's starting
point). `--ctc DIR` also measures a converted CTC model. Needs espeak-ng (Debian).
Prints a Markdown table (docs/alignment.md has the measured one).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spiritlm_jax.alignment import AlignmentError, load_aligner  # noqa: E402
from spiritlm_jax.alignment.sphinx import PocketsphinxAligner  # noqa: E402
from tools.build_demo_corpus import synth_aligned  # noqa: E402

SETTINGS = (("en-us", 165), ("en-us", 220), ("en", 150), ("en-gb-x-rp", 160), ("en-us+f3", 140))
EXTRA = (
    "Please leave your message after the tone when done hang up or press the pound key",
    "Agent logged in",
    "Your call is important to us so please stay on the line",
)


def sentences(n: int) -> list[str]:
    own = dict.fromkeys(ln.strip() for ln in (ROOT / "tests/data/english.txt").read_text().splitlines() if ln.strip())
    return (list(own) + list(EXTRA))[:n]


class DefaultBeams(PocketsphinxAligner):
    """pocketsphinx with its default beams, no trimming, no retry (the issue's starting point)."""

    def align(self, wav, text):
        from pocketsphinx import Decoder

        words, toks = self._tokens(text)
        d = self._decoders.setdefault("default", Decoder(samprate=16000, bestpath=False, loglevel="FATAL"))
        segs = self._run(d, (np.clip(wav, -1, 1) * 32767).astype(np.int16), toks)
        if segs is None:
            raise AlignmentError("no alignment")
        return [[w.text, s[1] * 0.01, (s[2] + 1) * 0.01] for w, s in zip(words, segs)]


def measure(aligner, data) -> dict:
    ok, starts, ends, audio_s, t0 = 0, [], [], 0.0, time.perf_counter()
    for wav, truth in data:
        audio_s += len(wav) / 16000
        try:
            got = aligner.align(wav, " ".join(w for w, _, _ in truth))
        except AlignmentError:
            continue
        ok += 1
        starts += [g[1] - t[1] for g, t in zip(got, truth)]
        ends += [abs(g[2] - t[2]) for g, t in zip(got, truth)]
    signed = np.asarray(starts) * 1000
    s, e = np.abs(signed), np.asarray(ends) * 1000
    sec = time.perf_counter() - t0
    return {
        "ok": ok,
        "n": len(data),
        "start_mean": s.mean() if len(s) else float("nan"),
        "start_signed": signed.mean() if len(s) else float("nan"),
        "start_median": np.median(s) if len(s) else float("nan"),
        "start_p90": np.percentile(s, 90) if len(s) else float("nan"),
        "within_50": (s <= 50).mean() if len(s) else float("nan"),
        "end_mean": e.mean() if len(e) else float("nan"),
        "words": len(s),
        "speed": audio_s / sec,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=13)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--ctc", default=None)
    a = ap.parse_args(argv)
    texts = [" ".join(re.findall(r"[A-Za-z0-9']+", t)) for t in sentences(a.sentences)]
    rng = np.random.default_rng(a.seed)
    aligners = {"pocketsphinx": load_aligner("pocketsphinx")}
    if a.baseline:
        aligners["pocketsphinx, no pause snapping"] = PocketsphinxAligner(snap=False)
        aligners["pocketsphinx, default beams"] = DefaultBeams()
    if a.ctc:
        aligners["ctc"] = load_aligner(f"ctc:{a.ctc}")
    print("| aligner | voice | rate (wpm) | aligned | mean abs start err (ms) | median | p90 | signed mean "
          "| starts <= 50 ms | mean abs end err (ms) | x real time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        total = {k: [] for k in aligners}
        for voice, rate in SETTINGS:
            data = [synth_aligned(t, voice, rate, rng, Path(tmp)) for t in texts]
            for name, al in aligners.items():
                r = measure(al, data)
                total[name].append(r)
                print(f"| {name} | {voice} | {rate} | {r['ok']}/{r['n']} | {r['start_mean']:.0f} | "
                      f"{r['start_median']:.0f} | {r['start_p90']:.0f} | {r['start_signed']:+.0f} | "
                      f"{100 * r['within_50']:.0f} % | "
                      f"{r['end_mean']:.0f} | {r['speed']:.1f} |", flush=True)  # fmt: skip
        for name, rs in total.items():
            ok, n = sum(r["ok"] for r in rs), sum(r["n"] for r in rs)
            w = np.asarray([r["words"] for r in rs], float)
            mean = float(np.nansum([r["start_mean"] * r["words"] for r in rs]) / max(w.sum(), 1))
            print(f"| {name} | all | | {ok}/{n} ({100 * ok / n:.0f} %) | {mean:.0f} | | | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
