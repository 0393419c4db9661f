"""Forced alignment: recordings + transcripts -> word times `[[word, start_s, end_s], ...]`
(docs/alignment.md; command line `python -m spiritlm_jax.align`).

    aligner = load_aligner("pocketsphinx")          # or "ctc:DIR" (a converted wav2vec2 CTC model)
    words = aligner.align(wav_16k, "Agent logged in.")   # [["Agent", 0.21, 0.58], ...]

Modules: `base` (AlignmentError, batching), `text` (the documented transcript normalisation),
`sphinx` (pocketsphinx, English, offline), `ctc` (CTC Viterbi in JAX + the wav2vec2 CTC aligner),
`manifest` (manifest lines and audio folders), `run` (the resumable manifest driver).
This layer sits between data (prepare may align) and speech.
"""

from spiritlm_jax.alignment.base import AlignmentError, align_many, align_one
from spiritlm_jax.alignment.ctc import CTCAligner, ctc_viterbi
from spiritlm_jax.alignment.sphinx import PocketsphinxAligner
from spiritlm_jax.alignment.text import transcript_words

ALIGNERS = "pocketsphinx | ctc:DIR"


def load_aligner(spec: str, star: str = "none"):
    """`pocketsphinx` (English, offline, the PyPI package's en-us model; `pocketsphinx:DICT` for another
    CMU-format dictionary) or `ctc:DIR` (a converted wav2vec2 CTC model,
    tools/convert_weights/wav2vec2_ctc_from_hf.py). `star` (ctc only): "edges" puts a star token before
    and after the transcript to absorb untranscribed speech there, as MMS does."""
    kind, _, arg = spec.partition(":")
    if kind == "pocketsphinx":
        return PocketsphinxAligner(arg or None)
    if kind == "ctc":
        if not arg:
            raise ValueError("aligner ctc:DIR needs the converted CTC model directory")
        return CTCAligner.load(arg, star=star)
    raise ValueError(f"aligner {spec!r}: expected {ALIGNERS}")


__all__ = ["ALIGNERS", "AlignmentError", "CTCAligner", "PocketsphinxAligner", "align_many", "align_one", "ctc_viterbi",
           "load_aligner", "transcript_words"]  # fmt: skip
