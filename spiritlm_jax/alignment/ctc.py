"""CTC forced alignment in JAX (the MMS aligner's method: wav2vec2 CTC emissions + Viterbi).

- `ctc_viterbi(logp_btv, targets_bl, frames_b, lengths_b, blank)`: the best CTC path of each item of
  a padded batch, jitted, one `lax.scan` over frames. The path runs through the 2L+1 states
  blank, y1, blank, y2, ..., yL, blank: a state stays, moves one up, or skips the blank between two
  *different* labels (a repeated label needs a blank between its copies). The path ends in the last
  label or the last blank. Ties go to staying, then to the previous state. Items are padded in time
  (frames past `frames_b` are not used) and in labels (`lengths_b`).
- star token (MMS's `<star>`): `with_star(logp, star_logp)` appends one more emission column (log
  prob `star_logp`, 0 by default as MMS does) whose id is V (a vocabulary with a "*" label uses
  that label instead); placing it in the targets lets the path absorb untranscribed speech there
  (`CTCAligner(star="edges")`: before the first and after the last word).
- `token_spans(states, lengths)` -> (first frame, last frame) of each label; words get the span
  from their first label's first frame to their last label's last frame; time = frame x
  frame_seconds (20 ms for wav2vec2), end = (last frame + 1) x frame_seconds.
- Long audio: emissions computed in windows (30 s + 2 s of context on each side, kept frames only),
  then one Viterbi pass over the whole file, as the MMS recipe does.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.alignment.base import AlignmentError
from spiritlm_jax.alignment.text import transcript_words
from spiritlm_jax.buckets import pow2_bucket
from spiritlm_jax.io import load_component
from spiritlm_jax.speech.audio import SAMPLE_RATE, pad_batch
from spiritlm_jax.speech.wav2vec2 import CTC_SPEC, Wav2Vec2CTCConfig, Wav2Vec2ForCTC

NEG = -1e30  # "minus infinity" that stays finite under addition in fp32


def extended_states(targets_bl: jax.Array, blank: int) -> jax.Array:
    """[B, 2L+1] labels of the CTC states: blank, y1, blank, ..., yL, blank."""
    b, n = targets_bl.shape
    ext = jnp.full((b, 2 * n + 1), blank, targets_bl.dtype)
    return ext.at[:, 1::2].set(targets_bl)


@functools.partial(jax.jit, static_argnames=("blank",))
def ctc_viterbi(logp_btv, targets_bl, frames_b, lengths_b, blank: int = 0):
    """Best CTC path per item: (states [B, T] int32, score [B] fp32).

    logp_btv: log-probabilities [B, T, V]; targets_bl: label ids [B, L] (padding anything);
    frames_b / lengths_b: valid frames / labels per item. states[b, t] is the CTC state of frame t
    (2k+1: label k, even: a blank), for t < frames_b[b]. score = the path's summed log-probability;
    -1e30 or below when the labels do not fit in the frames (L + repeats > T).
    """
    logp_btv = logp_btv.astype(jnp.float32)
    b, t, _ = logp_btv.shape
    ext_bs = extended_states(targets_bl, blank)
    s = ext_bs.shape[1]
    idx = jnp.arange(s)
    n_states_b = 2 * lengths_b + 1
    live_bs = idx[None, :] < n_states_b[:, None]
    prev2_bs = jnp.concatenate([jnp.full((b, 2), -1, ext_bs.dtype), ext_bs[:, :-2]], 1)
    skip_bs = (idx[None, :] % 2 == 1) & (idx[None, :] >= 2) & (ext_bs != prev2_bs)

    def emit(t_i):
        return jnp.where(live_bs, jnp.take_along_axis(logp_btv[:, t_i], ext_bs, axis=1), NEG)

    alpha0 = jnp.where(idx[None, :] < 2, emit(0), NEG)
    alpha0 = jnp.where(live_bs, alpha0, NEG)

    def step(alpha_bs, t_i):
        stay = alpha_bs
        up = jnp.concatenate([jnp.full((b, 1), NEG), alpha_bs[:, :-1]], 1)
        skip = jnp.where(skip_bs, jnp.concatenate([jnp.full((b, 2), NEG), alpha_bs[:, :-2]], 1), NEG)
        cand = jnp.stack([stay, up, skip], 0)
        bp_bs = jnp.argmax(cand, 0).astype(jnp.int8)
        new = jnp.maximum(jnp.max(cand, 0) + emit(t_i), NEG)
        active_b1 = (t_i < frames_b)[:, None]
        return jnp.where(active_b1, new, alpha_bs), jnp.where(active_b1, bp_bs, 0).astype(jnp.int8)

    alpha, bp_tbs = jax.lax.scan(step, alpha0, jnp.arange(1, t))
    last = n_states_b - 1
    a_last = jnp.take_along_axis(alpha, last[:, None], 1)[:, 0]
    a_prev = jnp.take_along_axis(alpha, jnp.maximum(last - 1, 0)[:, None], 1)[:, 0]
    use_prev = (lengths_b > 0) & (a_prev > a_last)
    end_b = jnp.where(use_prev, last - 1, last)
    score_b = jnp.where(use_prev, a_prev, a_last)

    def back(s_b, bp_bs):
        prev = s_b - jnp.take_along_axis(bp_bs, s_b[:, None], 1)[:, 0].astype(s_b.dtype)
        return prev, s_b

    s0_b, states_tb = jax.lax.scan(back, end_b, bp_tbs, reverse=True)
    states_bt = jnp.concatenate([s0_b[:, None], states_tb.T], 1)
    return states_bt.astype(jnp.int32), score_b


def with_star(logp_btv, star_logp: float = 0.0):
    """Emissions with one more column (id V), the star token's, at log-probability `star_logp`."""
    pad = jnp.full(logp_btv.shape[:-1] + (1,), star_logp, logp_btv.dtype)
    return jnp.concatenate([logp_btv, pad], -1)


def token_spans(states_t: np.ndarray, n_labels: int) -> list[tuple[int, int]]:
    """(first frame, last frame) of each label of one item's Viterbi path."""
    states_t = np.asarray(states_t)
    spans = []
    for k in range(n_labels):
        f = np.nonzero(states_t == 2 * k + 1)[0]
        if not len(f):
            raise AlignmentError(f"label {k} got no frame (broken path)")
        spans.append((int(f[0]), int(f[-1])))
    return spans


def windowed_logits(
    fn, wav: np.ndarray, window_s: float = 30.0, context_s: float = 2.0, hop: int = 320, receptive_field: int = 400
) -> np.ndarray:
    """CTC logits [T, V] of a long recording from windows of `window_s` seconds with `context_s` seconds
    of context on each side (the context frames are computed and dropped). `fn(list of wavs)` ->
    list of [T_i, V] logits. T = the frames of the whole recording."""
    n = len(wav)
    total = (n - receptive_field) // hop + 1
    if total < 1:
        raise AlignmentError(f"{n} samples is shorter than one frame ({receptive_field} samples)")
    win = max(hop, int(round(window_s * SAMPLE_RATE / hop)) * hop)
    ctx = int(round(context_s * SAMPLE_RATE / hop)) * hop
    if n <= win + 2 * ctx:
        return fn([wav])[0][:total]
    chunks, keep = [], []
    for a in range(0, total * hop, win):
        lo, hi = max(0, a - ctx), min(n, a + win + ctx + receptive_field - hop)
        f0 = (a - lo) // hop
        chunks.append(wav[lo:hi])
        keep.append((f0, f0 + min(win // hop, total - a // hop)))
    outs = fn(chunks)
    return np.concatenate([o[k0:k1] for o, (k0, k1) in zip(outs, keep)], 0)


class CTCAligner:
    """Forced alignment with a converted wav2vec2 CTC model (`ctc:DIR`).

    Transcript words -> spoken tokens (alignment.text) -> characters of the model's vocabulary
    (upper-cased when the vocabulary's letters are upper case; the word delimiter between words when
    the vocabulary has one; a character outside the vocabulary is an AlignmentError naming it) ->
    log-softmax emissions (windowed) -> Viterbi -> word spans."""

    name = "ctc"

    def __init__(
        self,
        params,
        cfg: Wav2Vec2CTCConfig,
        star: str = "none",
        star_logp: float = 0.0,
        window_s: float = 30.0,
        context_s: float = 2.0,
    ):
        if star not in ("none", "edges"):
            raise ValueError(f"star must be none or edges, got {star!r}")
        self.params, self.cfg, self.star, self.star_logp = params, cfg, star, star_logp
        self.window_s, self.context_s = window_s, context_s
        self.ids = {lab: i for i, lab in enumerate(cfg.labels)}
        letters = [lab for lab in cfg.labels if len(lab) == 1 and lab.isalpha()]
        self.upper = bool(letters) and sum(c.isupper() for c in letters) > len(letters) / 2
        self.delim = self.ids.get(cfg.word_delimiter) if cfg.word_delimiter else None
        # the star: the vocabulary's "*" when it has one (its emissions are the model's), else one more
        # column at log-probability star_logp (MMS's with_star)
        self.star_id = self.ids.get("*", len(cfg.labels))
        self.extra_column = star != "none" and "*" not in self.ids
        self._model = jax.jit(lambda p, w, n: Wav2Vec2ForCTC(cfg).apply({"params": p}, w, n))

    @classmethod
    def load(cls, directory, **kw) -> "CTCAligner":
        params, cfgs = load_component(Path(directory), CTC_SPEC)
        return cls(params, cfgs["ctc.yaml"], **kw)

    def describe(self) -> str:
        layout = "stable-layer-norm" if self.cfg.stable_layer_norm else "base"
        return f"ctc (wav2vec2 {layout}, {len(self.cfg.labels)} labels)"

    def log_probs(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Log-softmax CTC emissions [T_i, V] of 16 kHz waveforms (one padded batch)."""
        lengths = [len(w) for w in wavs]
        # short inputs in power-of-two buckets, long ones (windows) in 2 s steps: few shapes, little padding
        n = max(lengths)
        batch = pad_batch(list(wavs), pow2_bucket(n, minimum=4096) if n <= 65536 else -(-n // 32000) * 32000)
        logits, frames = self._model(self.params, jnp.asarray(batch), jnp.asarray(lengths, jnp.int32))
        logp = np.asarray(jax.nn.log_softmax(logits, -1))
        frames = np.asarray(frames)

        return [logp[i, : frames[i]] for i in range(len(wavs))]

    def emissions(self, wav: np.ndarray) -> np.ndarray:
        enc = self.cfg.encoder
        return windowed_logits(self.log_probs, wav, self.window_s, self.context_s, enc.hop, enc.receptive_field)

    def targets(self, text: str):
        """(label ids, [(first label, last label) per word], words as written)."""
        words = transcript_words(text)
        if not words:
            raise AlignmentError("the transcript has no word to align")
        star = self.star_id
        ids, spans = [], []
        if self.star == "edges":
            ids.append(star)
        for i, w in enumerate(words):
            if i and self.delim is not None:
                ids.append(self.delim)
            first = len(ids)
            for j, tok in enumerate(w.tokens):
                if j and self.delim is not None:
                    ids.append(self.delim)
                for ch in tok.upper() if self.upper else tok:
                    if ch not in self.ids:
                        raise AlignmentError(f"word {w.text!r}: character {ch!r} is not in the CTC vocabulary")
                    ids.append(self.ids[ch])
            spans.append((first, len(ids) - 1))
        if self.star == "edges":
            ids.append(star)
        return ids, spans, [w.text for w in words]

    def align_batch(self, items: Sequence[tuple[np.ndarray, str]]) -> list:
        """[[word, start_s, end_s], ...] or an AlignmentError per (16 kHz wav, transcript)."""
        results: list = [None] * len(items)
        prepared = []
        for i, (wav, text) in enumerate(items):
            try:
                ids, spans, words = self.targets(text)
                prepared.append((i, self.emissions(wav), ids, spans, words))
            except AlignmentError as e:
                results[i] = e
        if prepared:
            t = pow2_bucket(max(len(p[1]) for p in prepared), minimum=64)
            ell = pow2_bucket(max(len(p[2]) for p in prepared), minimum=16)
            v = len(self.cfg.labels) + self.extra_column
            logp = np.full((len(prepared), t, v), NEG, np.float32)
            tgt = np.zeros((len(prepared), ell), np.int32)
            for j, (_, e, ids, _, _) in enumerate(prepared):
                logp[j, : len(e), : e.shape[1]] = e
                if self.extra_column:
                    logp[j, : len(e), -1] = self.star_logp
                tgt[j, : len(ids)] = ids
            frames = np.array([len(p[1]) for p in prepared], np.int32)
            lengths = np.array([len(p[2]) for p in prepared], np.int32)
            states, score = ctc_viterbi(
                jnp.asarray(logp), jnp.asarray(tgt), jnp.asarray(frames), jnp.asarray(lengths), blank=self.cfg.blank
            )
            states, score = np.asarray(states), np.asarray(score)
            dt = self.cfg.frame_seconds
            for j, (i, e, ids, spans, words) in enumerate(prepared):
                if not score[j] > NEG / 2:
                    results[i] = AlignmentError(
                        f"the transcript ({len(ids)} labels) does not fit in {len(e)} frames of audio"
                    )
                    continue
                tok = token_spans(states[j, : len(e)], len(ids))
                results[i] = [
                    [w, round(tok[a][0] * dt, 3), round((tok[b][1] + 1) * dt, 3)] for w, (a, b) in zip(words, spans)
                ]
        return results

    def align(self, wav: np.ndarray, text: str) -> list:
        r = self.align_batch([(wav, text)])[0]
        if isinstance(r, AlignmentError):
            raise r
        return r


__all__ = [
    "CTCAligner",
    "ctc_viterbi",
    "extended_states",
    "token_spans",
    "windowed_logits",
    "with_star",
]
