"""CTC Viterbi forced alignment (spiritlm_jax.alignment.ctc) against a NumPy dynamic-programming
reference written here, on random emissions of many shapes with repeated labels, padded batches;
known spans recovered from emissions built from them; star token; windowed emissions; the CTC
aligner's transcript -> label mapping and word spans on a tiny random model."""

import numpy as np
import pytest

from spiritlm_jax.alignment import AlignmentError
from spiritlm_jax.alignment.ctc import NEG, CTCAligner, ctc_viterbi, token_spans, windowed_logits, with_star
from spiritlm_jax.speech.hubert import STANDARD_50HZ, HubertConfig
from spiritlm_jax.speech.wav2vec2 import Wav2Vec2CTCConfig, Wav2Vec2ForCTC


def viterbi_reference(logp, targets, blank):
    """Best CTC path by explicit DP (float32, ties: stay, then up, then skip); (states, score)."""
    t_n = logp.shape[0]
    ext = [blank]
    for y in targets:
        ext += [y, blank]
    s_n = len(ext)
    alpha = np.full((t_n, s_n), NEG, np.float32)
    bp = np.zeros((t_n, s_n), np.int64)
    alpha[0, 0] = logp[0, blank]
    if s_n > 1:
        alpha[0, 1] = logp[0, ext[1]]
    for t in range(1, t_n):
        for s in range(s_n):
            cands = [alpha[t - 1, s], alpha[t - 1, s - 1] if s >= 1 else NEG]
            skip_ok = s % 2 == 1 and s >= 2 and ext[s] != ext[s - 2]
            cands.append(alpha[t - 1, s - 2] if skip_ok else NEG)
            k = int(np.argmax(np.asarray(cands, np.float32)))
            bp[t, s] = k
            alpha[t, s] = max(np.float32(cands[k]) + logp[t, ext[s]], NEG)
    ends = [s_n - 1] + ([s_n - 2] if len(targets) else [])
    end = max(ends, key=lambda s: (alpha[-1, s], -s))  # the last blank wins ties
    states = [end]
    for t in range(t_n - 1, 0, -1):
        states.append(states[-1] - bp[t, states[-1]])
    return np.asarray(states[::-1]), float(alpha[-1, end])


def random_case(rng, t, n_labels, v, blank):
    logp = rng.normal(size=(t, v)).astype(np.float32) * 3
    logp = (logp - np.log(np.exp(logp).sum(-1, keepdims=True))).astype(np.float32)
    labels = [c for c in range(v) if c != blank]
    tgt = list(rng.choice(labels, n_labels))
    for i in range(1, n_labels):  # force some repeats
        if rng.random() < 0.3:
            tgt[i] = tgt[i - 1]
    return logp, tgt


@pytest.mark.parametrize("seed", range(10))
def test_viterbi_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    b = int(rng.integers(1, 5))
    v = int(rng.integers(3, 12))
    blank = int(rng.integers(0, v))
    cases = []
    for _ in range(b):
        n = int(rng.integers(0, 9))
        t = int(rng.integers(max(1, 2 * n + 1), 40))
        cases.append((t, n) + random_case(rng, t, n, v, blank))
    t_max, l_max = max(c[0] for c in cases), max(max(c[1] for c in cases), 1)
    logp = np.full((b, t_max, v), -5.0, np.float32)
    tgt = np.full((b, l_max), 1, np.int32)
    for i, (t, n, lp, tg) in enumerate(cases):
        logp[i, :t] = lp
        tgt[i, :n] = tg
    states, score = ctc_viterbi(
        logp, tgt, np.array([c[0] for c in cases], np.int32), np.array([c[1] for c in cases], np.int32), blank=blank
    )
    states, score = np.asarray(states), np.asarray(score)
    for i, (t, n, lp, tg) in enumerate(cases):
        ref_states, ref_score = viterbi_reference(lp, tg, blank)
        np.testing.assert_array_equal(states[i, :t], ref_states, err_msg=f"item {i}, T={t}, L={n}")
        assert abs(score[i] - ref_score) <= 1e-4 * max(1.0, abs(ref_score))
        # the path's score is the sum of its emissions
        ext = [blank] + [x for y in tg for x in (y, blank)]
        assert abs(sum(lp[f, ext[s]] for f, s in enumerate(ref_states)) - ref_score) < 1e-3


def test_infeasible_transcript_scores_minus_infinity():
    logp = np.log(np.full((1, 3, 4), 0.25, np.float32))
    _, score = ctc_viterbi(logp, np.array([[1, 1]], np.int32), np.array([3]), np.array([2]))
    assert float(score[0]) > NEG / 2  # "1 _ 1" fits in 3 frames
    _, score = ctc_viterbi(logp, np.array([[1, 1, 2]], np.int32), np.array([3]), np.array([3]))
    assert float(score[0]) <= NEG / 2


def peaky(spans, t, v, blank, rng, p=0.9):
    """Emissions where label spans[k] = (label, first, last) wins its frames and blank the rest."""
    probs = rng.uniform(0, 1, size=(t, v)).astype(np.float32)
    probs[:, blank] += 0
    owner = np.full(t, blank)
    for lab, a, b in spans:
        owner[a : b + 1] = lab
    probs = probs * (1 - p) / probs.sum(-1, keepdims=True)
    probs[np.arange(t), owner] += p
    return np.log(probs)


def test_known_spans_are_recovered():
    rng = np.random.default_rng(0)
    spans = [(3, 2, 5), (3, 8, 9), (1, 10, 14), (2, 15, 15), (4, 20, 27)]  # repeated label 3, adjacent 1/2
    logp = peaky(spans, 32, 6, 0, rng)
    states, score = ctc_viterbi(logp[None], np.array([[s[0] for s in spans]], np.int32), np.array([32]), np.array([5]))
    assert token_spans(np.asarray(states[0]), 5) == [(a, b) for _, a, b in spans]


def test_star_absorbs_untranscribed_speech():
    rng = np.random.default_rng(1)
    # frames 0-9: speech of label 2 that the transcript lacks; then label 1 at 14-17
    logp = peaky([(2, 0, 9), (1, 14, 17)], 24, 4, 0, rng)
    star = 4
    logp_star = np.asarray(with_star(logp, -1.0))
    assert logp_star.shape == (24, 5) and (logp_star[:, star] == -1.0).all()
    states, _ = ctc_viterbi(logp_star[None], np.array([[star, 1]], np.int32), np.array([24]), np.array([2]))
    spans = token_spans(np.asarray(states[0]), 2)
    assert spans[1] == (14, 17) and spans[0][0] == 0 and spans[0][1] >= 9


def test_windowed_logits_equal_one_pass_for_a_local_model():
    hop, rf = 320, 400
    fn = (
        lambda chunks: [  # noqa: E731 - a "model" whose frame j sees only samples [320 j, 320 j + 400)
            np.stack([c[j * hop : j * hop + rf].reshape(-1, 40).mean(1) for j in range((len(c) - rf) // hop + 1)])
            for c in chunks
        ]
    )
    wav = np.random.default_rng(0).normal(size=16000 * 9 + 123).astype(np.float32)
    full = fn([wav])[0]
    win = windowed_logits(fn, wav, window_s=2.0, context_s=0.5)
    assert win.shape == full.shape
    np.testing.assert_array_equal(win, full)


LABELS = ("<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "H", "W", "R", "Y", "F", "U", "I")


@pytest.fixture(scope="module")
def tiny_aligner():
    import jax

    conv = tuple((16, k, s) for _, k, s in STANDARD_50HZ)
    enc = HubertConfig(conv_layers=conv, hidden=32, num_layers=1, num_heads=2, ffn=48, pos_conv_kernel=8,
                       pos_conv_groups=2, output_layer=1)  # fmt: skip
    cfg = Wav2Vec2CTCConfig(encoder=enc, stable_layer_norm=True, conv_bias=True, labels=LABELS)
    params = jax.jit(Wav2Vec2ForCTC(cfg).init)(jax.random.PRNGKey(0), np.zeros((1, 4000), np.float32))["params"]
    return CTCAligner(params, cfg)


def test_ctc_aligner_labels_and_word_spans(tiny_aligner):
    ids, spans, words = tiny_aligner.targets("Hey, 24 fun!")
    lab = [LABELS[i] for i in ids]
    assert "".join(lab) == "HEY|TWENTY|FOUR|FUN" and words == ["Hey,", "24", "fun!"]
    assert [("".join(lab[a : b + 1])) for a, b in spans] == ["HEY", "TWENTY|FOUR", "FUN"]
    with pytest.raises(AlignmentError, match="'z'|'Z'"):
        tiny_aligner.targets("zoo")
    wav = np.random.default_rng(0).normal(size=16000 * 2).astype(np.float32) * 0.1
    out = tiny_aligner.align_batch([(wav, "Hey, 24 fun!"), (wav[:800], "Hey, 24 fun!"), (wav, "zoo")])
    assert [w[0] for w in out[0]] == ["Hey,", "24", "fun!"]
    starts = [w[1] for w in out[0]]
    assert starts == sorted(starts) and all(0 <= w[1] < w[2] <= 2.0 for w in out[0])
    assert isinstance(out[1], AlignmentError) and "does not fit" in str(out[1])
    assert isinstance(out[2], AlignmentError)


def test_ctc_aligner_word_times_from_known_emissions(tiny_aligner, monkeypatch):
    """Emissions that put each letter of "hey fun" on known frames give those words' times at 20 ms."""
    ids, spans, _ = tiny_aligner.targets("hey fun")
    rng = np.random.default_rng(0)
    frames = {0: (5, 6), 1: (7, 9), 2: (10, 10), 3: (14, 15), 4: (20, 21), 5: (22, 24), 6: (25, 30)}  # H E Y | F U N
    logp = peaky([(ids[k], a, b) for k, (a, b) in frames.items()], 40, len(LABELS), 0, rng)
    monkeypatch.setattr(tiny_aligner, "emissions", lambda wav: logp)
    words = tiny_aligner.align(np.zeros(16000, np.float32), "hey fun")
    assert words == [["hey", 0.1, 0.22], ["fun", 0.4, 0.62]]
