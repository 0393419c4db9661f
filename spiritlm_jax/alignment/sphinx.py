"""Forced alignment with pocketsphinx (PyPI `pocketsphinx` 5.x: its en-us acoustic model and CMU
dictionary; English only, offline). The default aligner of `python -m spiritlm_jax.align`.

Per recording (16 kHz float -> int16):
1. Silence trimming: leading/trailing audio more than 40 dB under the loudest 10 ms frame is cut
   (keeping 150 ms of margin); times are shifted back afterwards.
2. Dictionary: each spoken token (alignment.text) is looked up in the CMU dictionary; a token it lacks
   gets a pronunciation from a small rule-based letter-to-sound (`letter_to_sound`, greedy longest
   grapheme match to CMU phones; rough, so the spans of those words are less precise). Tokens with no
   letters left raise a per-file AlignmentError.
3. Forced alignment (`Decoder.set_align_text`, `seg()` with 10 ms frames) with the widest beams and
   silence expected between words (silprob 0.5); when the search does not reach the end of the
   grammar ("Final result does not match the grammar"), it is retried with the default silence
   probability, then with a liberal filler model, then on the untrimmed audio with more Gaussians
   per frame (`STRATEGIES`). Failing all is a per-file AlignmentError.
4. Pause snapping: each word boundary moves to the nearest silence/sound edge (10 ms frames 50 dB
   under the loudest) within 250 ms, never past its neighbours' boundaries; a boundary with no pause
   near it stays where the decoder put it (`snap=False` turns this off).
The output words are the transcript's words (their spelling kept), spanning their tokens' segments.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np
from pocketsphinx import Decoder

from spiritlm_jax.alignment.base import AlignmentError
from spiritlm_jax.alignment.text import transcript_words

FRAME_S = 0.01  # pocketsphinx's default frame rate (frate 100)
# Decoder settings tried in order until one reaches the end of the transcript, and whether the audio is
# silence-trimmed. The decoder's default beams (1e-48 / 7e-29 / 1e-48) drop the right path on
# synthetic and telephone speech (benchmarks/alignment.py: 26 % aligned). First the widest beams with
# a silence probability of 0.5 (default 0.005: pauses between words are expected; this halved the
# mean start error on the benchmark, 52 -> 25 ms), then the default silence probability, then a
# liberal filler model too, then more Gaussians per frame on the untrimmed audio.
_WIDE = {"beam": 1e-250, "wbeam": 1e-200, "pbeam": 1e-250}
STRATEGIES = (
    (True, {**_WIDE, "silprob": 0.5}),
    (True, _WIDE),
    (True, {**_WIDE, "silprob": 0.5, "fillprob": 0.1}),
    (False, {**_WIDE, "topn": 16}),
)
TRIM_DB = 40.0
TRIM_MARGIN_S = 0.15
SNAP_REACH_S, SNAP_DB = 0.25, 50.0  # pause snapping: how far a boundary may move; silence level

# greedy longest-match grapheme -> CMU phones (rough letter-to-sound for dictionary gaps)
_LTS = {
    "tch": "CH", "sch": "S K", "igh": "AY", "ough": "AO", "augh": "AO", "tion": "SH AH N", "sion": "ZH AH N",
    "ch": "CH", "sh": "SH", "th": "TH", "ph": "F", "wh": "W", "ck": "K", "ng": "NG", "qu": "K W", "kn": "N",
    "wr": "R", "gh": "G", "ee": "IY", "ea": "IY", "oo": "UW", "ou": "AW", "ow": "OW", "oi": "OY", "oy": "OY",
    "ai": "EY", "ay": "EY", "ei": "EY", "ey": "EY", "au": "AO", "aw": "AO", "ie": "IY", "ue": "UW", "ew": "UW",
    "oa": "OW", "er": "ER", "ir": "ER", "ur": "ER", "ar": "AA R", "or": "AO R", "x": "K S",
    "a": "AE", "e": "EH", "i": "IH", "o": "AA", "u": "AH", "y": "IY", "b": "B", "c": "K", "d": "D",
    "f": "F", "g": "G", "h": "HH", "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "p": "P", "r": "R",
    "s": "S", "t": "T", "v": "V", "w": "W", "z": "Z",
}  # fmt: skip
_LTS_MAX = max(len(k) for k in _LTS)


def letter_to_sound(token: str) -> Optional[str]:
    """CMU phones for a token the dictionary lacks ("zorbly" -> "Z AO R B L IY"); None without letters."""
    w = re.sub(r"[^a-z]", "", token.lower())
    if len(w) > 1 and w.endswith("e") and not w.endswith(("ee", "ie", "ue", "ye")):
        w = w[:-1]  # silent final e
    phones, i = [], 0
    while i < len(w):
        for n in range(min(_LTS_MAX, len(w) - i), 0, -1):
            p = _LTS.get(w[i : i + n])
            if p is not None:
                if w[i : i + n] == "y" and i == 0:
                    p = "Y"
                phones.append(p)
                i += n
                break
        else:
            i += 1
    return " ".join(phones) or None


def silent_frames(wav: np.ndarray, sr: int = 16000, top_db: float = TRIM_DB) -> np.ndarray:
    """[frames] bool per 10 ms frame: more than `top_db` under the loudest frame."""
    hop = sr // 100
    n = len(wav) // hop
    rms = np.sqrt(np.mean(wav[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    return 20 * np.log10(rms / max(rms.max(), 1e-9)) <= -top_db


def snap_to_pauses(words: list, silent: np.ndarray, reach_s: float = SNAP_REACH_S):
    """Move each word's start to the nearest silence -> sound onset and its end to the nearest
    sound -> silence offset within `reach_s` (not past the neighbouring words' aligned boundaries);
    a boundary with no pause near it is unchanged. In place; returns `words`."""
    n, r = len(silent), reach_s / FRAME_S
    onsets = np.nonzero(silent[:-1] & ~silent[1:])[0] + 1  # first sound frame after silence
    offsets = np.nonzero(~silent[:-1] & silent[1:])[0] + 1  # first silent frame after sound
    frames = [(int(round(w[1] / FRAME_S)), int(round(w[2] / FRAME_S))) for w in words]
    prev_end = 0
    for i, (w, (s, e)) in enumerate(zip(words, frames)):
        nxt_end = frames[i + 1][1] if i + 1 < len(frames) else n + 1
        c = onsets[(onsets >= max(prev_end, s - r)) & (onsets <= min(e - 1, s + r))]
        s = int(c[np.argmin(np.abs(c - s))]) if len(c) else max(s, prev_end)
        c = offsets[(offsets >= max(s + 1, e - r)) & (offsets <= min(e + r, nxt_end - 1, n))]
        e = int(c[np.argmin(np.abs(c - e))]) if len(c) else max(e, s)
        w[1], w[2] = round(s * FRAME_S, 3), round(e * FRAME_S, 3)
        prev_end = e
    return words


def trim_bounds(wav: np.ndarray, sr: int = 16000, top_db: float = TRIM_DB, margin_s: float = TRIM_MARGIN_S):
    """(first, last) sample of the non-silent part (frames within `top_db` of the loudest, +margin)."""
    hop = sr // 100
    n = len(wav) // hop
    if n < 2:
        return 0, len(wav)
    rms = np.sqrt(np.mean(wav[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms / rms.max()) > -top_db)[0]
    if not len(loud):
        return 0, len(wav)
    m = int(margin_s * sr)
    return max(0, loud[0] * hop - m), min(len(wav), (loud[-1] + 1) * hop + m)


class PocketsphinxAligner:
    """`align(wav_16k, text)`: word spans from pocketsphinx's forced alignment (module doc)."""

    name = "pocketsphinx"

    def __init__(self, dictionary: Optional[str] = None, snap: bool = True):
        self.dictionary, self.snap = dictionary, snap
        self._decoders: dict = {}
        self.oov_added: set[str] = set()

    def describe(self) -> str:
        return "pocketsphinx (en-us)" + (f", dictionary {self.dictionary}" if self.dictionary else "")

    def _decoder(self, i: int) -> Decoder:
        if i not in self._decoders:
            kw = {"dict": self.dictionary} if self.dictionary else {}
            d = Decoder(samprate=16000, bestpath=False, loglevel="FATAL", maxhmmpf=-1, **STRATEGIES[i][1], **kw)
            for tok in sorted(self.oov_added):
                d.add_word(tok, letter_to_sound(tok), True)
            self._decoders[i] = d
        return self._decoders[i]

    def _tokens(self, text: str):
        words = transcript_words(text)
        if not words:
            raise AlignmentError("the transcript has no word to align")
        d = self._decoder(0)
        toks = []
        for w in words:
            for t in w.tokens:
                if d.lookup_word(t) is None and t not in self.oov_added:
                    phones = letter_to_sound(t)
                    if phones is None:
                        raise AlignmentError(
                            f"word {w.text!r}: token {t!r} is not in the dictionary and has no letters"
                        )
                    self.oov_added.add(t)
                    for dec in self._decoders.values():
                        dec.add_word(t, phones, True)
                toks.append(t)
        return words, toks

    def _run(self, d: Decoder, pcm: np.ndarray, toks: list[str]):
        d.set_align_text(" ".join(toks))
        d.start_utt()
        d.process_raw(pcm.tobytes(), full_utt=True)
        d.end_utt()
        if d.hyp() is None:
            return None
        segs = []
        for s in d.seg():
            name = re.sub(r"\(\d+\)$", "", s.word)
            if name.startswith(("<", "[", "+")) or name == "(NULL)":
                continue
            segs.append((name, s.start_frame, s.end_frame))
        if [s[0] for s in segs] != toks:
            return None
        return segs

    def align(self, wav: np.ndarray, text: str) -> list:
        words, toks = self._tokens(text)
        wav = np.asarray(wav, np.float32)
        if len(wav) < 1600:
            raise AlignmentError(f"{len(wav)} samples: too short to align")
        lo, hi = trim_bounds(wav)
        full = (np.clip(wav, -1, 1) * 32767).astype(np.int16)
        for i, (trim, _) in enumerate(STRATEGIES):
            a, b = (lo, hi) if trim else (0, len(wav))
            segs = self._run(self._decoder(i), full[a:b], toks)
            if segs is not None:
                break
        else:
            raise AlignmentError("pocketsphinx found no alignment (search did not reach the end of the transcript)")
        off = a / 16000
        out, k = [], 0
        for w in words:
            first, last = segs[k], segs[k + len(w.tokens) - 1]
            k += len(w.tokens)
            out.append([w.text, round(off + first[1] * FRAME_S, 3), round(off + (last[2] + 1) * FRAME_S, 3)])
        return snap_to_pauses(out, silent_frames(wav, top_db=SNAP_DB)) if self.snap else out
