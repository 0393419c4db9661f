"""The interleaving ablation's corpus builder: stories are deterministic, cloze items are fair
(other topic, same character), and a tiny build is byte-identical when repeated."""

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
