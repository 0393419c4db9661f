"""The bundle: an LM directory + tokenizer files + bundle.yaml; EXPRESSIVE decided by one rule
(the tokenizer's layout, else the writer's declaration), recorded once and never guessed again."""

import jax
import numpy as np
import pytest

from spiritlm_jax.bundle import (
    MANIFEST,
    BundleManifest,
    decide_expressive,
    load_bundle,
    load_lm,
    read_manifest,
    save_bundle,
)
from spiritlm_jax.data.pipeline import DEMO_CORPUS
from spiritlm_jax.model import LlamaConfig, init_params
from spiritlm_jax.tokens import TokenLayout

SP_PIECES = 512  # the demo tokenizer


def _lm(vocab: int):
    cfg = LlamaConfig(
        vocab_size=vocab, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=64, max_seq_len=64, dtype="float32"
    )
    return cfg, init_params(cfg, jax.random.PRNGKey(0))


@pytest.mark.parametrize("declared", [False, True])
def test_declared_layout_is_recorded_and_read_back(tmp_path, declared):
    cfg, params = _lm(TokenLayout(SP_PIECES, True).vocab_size)  # the embedding size says nothing
    d = save_bundle(tmp_path / "m", params, cfg, tokenizer_src=DEMO_CORPUS, expressive=declared)
    assert read_manifest(d) == BundleManifest(expressive=declared)
    assert decide_expressive(d, declared) is declared and decide_expressive(d) is False  # bare tokenizer.model
    b = load_bundle(d, dtype="float32")
    assert b.expressive is declared and b.tokenizer.layout.expressive is declared
    assert b.speech_tokenizer is None and b.vocoder is None and b.model.cfg.vocab_size == cfg.vocab_size
    cfg2, params2 = load_lm(d)
    assert cfg2 == cfg
    assert all(
        np.array_equal(np.asarray(a), np.asarray(c)) for a, c in zip(jax.tree.leaves(params2), jax.tree.leaves(params))
    )


def test_not_a_bundle_is_an_error_naming_the_manifest(tmp_path):
    cfg, params = _lm(1024)
    d = save_bundle(tmp_path / "m", params, cfg, tokenizer_src=DEMO_CORPUS / "tokenizer.model")
    assert (d / "tokenizer.model").is_file()
    (d / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match=MANIFEST):
        load_bundle(d)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_expressive_without_pitch_or_style_is_an_error_naming_it(tmp_path):
    from spiritlm_jax.bundle import load_speech_tokenizer

    d = tmp_path / "speech"
    d.mkdir()
    (d / "hubert.yaml").write_text("{}")
    with pytest.raises(
        ValueError, match=r"EXPRESSIVE model, but its speech tokenizer .* has no .*style.*base_style_prompts"
    ):
        load_speech_tokenizer(d, expressive=True)
