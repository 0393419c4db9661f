"""The interleaving ablation's corpus builder: stories are deterministic, cloze items are fair
(other topic, same character), a tiny build is byte-identical when repeated, and the report's
bootstrap draws seeds and items (pooled accuracy, paired differences)."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.interleaving_ablation.stories import TOPICS, cloze_items, make_stories, vocabulary


def test_stories_are_deterministic_topical_and_distinct():
    a, b = make_stories(240, seed=5), make_stories(240, seed=5)
    assert a == b and make_stories(240, seed=6) != a
    assert len({s.text for s in a}) == 240
    assert {s.topic for s in a} == set(TOPICS) and all(4 <= len(s.sentences) <= 5 for s in a)
    vocab = set(vocabulary())
    assert 250 <= len(vocab) <= 400 and all(set(s.text.split()) <= vocab for s in a)
    for s in a:  # every story names a place of its own topic in its first sentence
        assert any(p in s.sentences[0].split() for p in TOPICS[s.topic][0])


def test_cloze_items_pair_another_topic_with_the_same_character():
    stories = make_stories(120, seed=1)
    items = cloze_items(stories, seed=2)
    assert items == cloze_items(stories, seed=2)
    by_ending = {s.sentences[-1]: s for s in stories}
    for it, s in zip(items, stories):
        assert it.context == s.sentences[:-1] and it.right == s.sentences[-1]
        other = by_ending[it.wrong]
        assert other.topic != s.topic and other.name == s.name


def _digest(root: Path) -> dict:
    """sha256 of every file, except Orbax's params/ folders (they hold save timestamps)."""
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and "params" not in p.relative_to(root).parts]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (installed by .ci/run)")
def test_tiny_build_is_reproducible(tmp_path):
    from benchmarks.interleaving_ablation.corpus import CorpusConfig, build_corpus
    from spiritlm_jax.io import load_component
    from spiritlm_jax.speech.quantizer import KMEANS_SPEC

    cfg = CorpusConfig(n_text=3, n_speech=2, n_aligned=2, n_cloze=24, k=8, vocab=120, kmeans_steps=10, voices=1)
    a = build_corpus(tmp_path / "a", cfg, progress=False)
    b = build_corpus(tmp_path / "b", cfg, progress=False)
    assert a == b
    da, db = _digest(tmp_path / "a" / "corpus"), _digest(tmp_path / "b" / "corpus")
    assert da == db and "train/aligned.jsonl.gz" in da
    assert _digest(tmp_path / "a" / "cloze") == _digest(tmp_path / "b" / "cloze")
    ca, cb = (load_component(tmp_path / r / "corpus" / "quantizer", KMEANS_SPEC)[0]["centroids"] for r in "ab")
    np.testing.assert_array_equal(ca, cb)  # the units, bit for bit
    assert len(list((tmp_path / "a" / "cloze").glob("*_context.wav"))) == 24
    assert a["counts"]["aligned"]["train"] + a["counts"]["aligned"]["eval"] == 2
    # a finished build is not redone; its record is returned
    assert build_corpus(tmp_path / "a", cfg, progress=False) == a


def _correct(values):
    return {f"item{i}": int(v) for i, v in enumerate(values)}


def test_pooled_interval_spans_seeds_and_items():
    from benchmarks.interleaving_ablation.__main__ import pooled

    # seeds that agree item by item: the interval comes from items only
    same = pooled([_correct([1, 0] * 100)] * 3)
    assert same["accuracy"] == 50.0 and same["seeds"] == 3 and same["n"] == 200
    assert same["ci_low"] < 50.0 < same["ci_high"]
    # same mean, but the seeds disagree (40 % vs 60 %): drawing seeds must widen the interval
    spread = pooled([_correct([1] * 80 + [0] * 120), _correct([1] * 120 + [0] * 80)] * 2)
    assert spread["accuracy"] == 50.0 and spread["per_seed_accuracy"] == [40.0, 60.0, 40.0, 60.0]
    assert spread["ci_high"] - spread["ci_low"] > same["ci_high"] - same["ci_low"] + 2.0
    # a constant result has no spread
    assert pooled([_correct([1] * 50)] * 2)["ci_low"] == 100.0


def test_paired_difference_pairs_items_and_seeds():
    from benchmarks.interleaving_ablation.__main__ import paired_difference

    a = [_correct([1] * 150 + [0] * 50)] * 3  # 75 %
    b = [_correct([1] * 100 + [0] * 100)] * 3  # 50 %, and a is right wherever b is
    d = paired_difference(a, b)
    assert d["difference"] == 25.0 and d["per_seed_difference"] == [25.0] * 3
    assert 15.0 < d["ci_low"] < 25.0 < d["ci_high"] < 35.0
    # identical runs differ by exactly nothing, whatever the items say
    z = paired_difference(a, a)
    assert (z["difference"], z["ci_low"], z["ci_high"]) == (0.0, 0.0, 0.0)
    # only items scored for every run and seed count
    short = [_correct([1] * 100)] * 3
    assert paired_difference(short, b)["n"] == 100


def test_scale_fit_recovers_a_known_power_law(tmp_path):
    """scale.py on curves drawn from L(D) = E + A*D^-alpha (E from the text loss, as the script sets it)
    gives back alpha, A and the tokens where speech's per-word loss is 4x text's; stray files beside the
    seed folders (logs such as seed2.log) are ignored."""
    import json

    from benchmarks.interleaving_ablation.__main__ import RUN, VARIANTS
    from benchmarks.interleaving_ablation.scale import estimate

    words, pieces, units = 1000, 1300, 9000  # 1.3 pieces and 9 units per word
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "corpus.done").write_text(
        json.dumps(
            {
                "words": {"text": words // 2, "aligned": words // 2},
                "tokens": {
                    "text": pieces // 2,
                    "speech": units // 2,
                    "aligned": {"text": pieces // 2, "speech": units // 2},
                },
            }
        )
    )
    text_loss, alpha, a = 0.7, 0.4, 300.0
    floor = text_loss * 1.3 / 9
    per_step = RUN["data"]["batch_size"] * RUN["data"]["seq_len"]
    for seed in (0, 1):
        for name in VARIANTS:
            run = tmp_path / f"seed{seed}" / "runs" / name
            run.mkdir(parents=True)
            rows = [
                {"step": s, "eval_loss_text": text_loss, "eval_loss_speech": floor + a * (s * per_step) ** -alpha}
                for s in range(200, RUN["steps"] + 1, 200)
            ]
            run.joinpath("metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "seed2.log").write_text("a log, not a seed folder\n")
    out = estimate(tmp_path)
    assert out["runs"] == 2 * len(VARIANTS)
    assert out["fit"]["alpha"] == pytest.approx(alpha, abs=1e-3) and out["fit"]["A"] == pytest.approx(a, rel=1e-3)
    want = (a / (4 * text_loss * 1.3 / 9 - floor)) ** (1 / alpha)  # 4x text per word, in units
    assert out["tokens_for_speech_per_word_within"]["4x_text"] == pytest.approx(want, abs=5e4)  # rounded to 0.1 M
