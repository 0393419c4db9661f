"""Style encoder parity with transformers' Wav2Vec2ForSequenceClassification (random weights, fp32) on
real speech, computed the way the reference style encoder does (written below from its published
code: wav2vec2-base feature-extractor normalisation -> wav2vec2 -> projector -> means over chunks of
50 frames -> classifier -> argmax), batched with padding.

Tolerance: per-second logits <= 1e-4 (post-LN encoder features are O(1); fp32 reassociation between
XLA and PyTorch is ~1e-6), and the argmax units equal.
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.hubert import STANDARD_50HZ, HubertConfig
from spiritlm_jax.speech.style import StyleConfig, StyleEncoder, StyleTokenizer, normalize, normalize_batch
from tools.convert_weights.style_from_hf import convert, style_config_from_hf, style_params

AMFM = Path(importlib.util.find_spec("amfm_decompy").submodule_search_locations[0]) / "sample.wav"
DATA = Path(__file__).parent / "data"
CONV = tuple((32, k, s) for _, k, s in STANDARD_50HZ)  # narrow channels for speed; real kernels/strides


def hf_classifier(seed=0, layers=2, labels=10, weighted=False):
    cfg = Wav2Vec2Config(
        use_weighted_layer_sum=weighted,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=96,
        conv_dim=[c for c, _, _ in CONV],
        conv_kernel=[k for _, k, _ in CONV],
        conv_stride=[s for _, _, s in CONV],
        conv_bias=False,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        classifier_proj_size=24,
        num_labels=labels,
    )
    torch.manual_seed(seed)
    m = Wav2Vec2ForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n or n.endswith("bias") or n == "layer_weights":
                p.add_(0.1 * torch.randn_like(p))
    return m


# facebook/wav2vec2-base's preprocessor_config.json, which the reference downloads
WAV2VEC2_BASE_FEATURES = Wav2Vec2FeatureExtractor(
    feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
)


def reference_style(m, wav: np.ndarray, pool_size: int = 50):
    """The reference Wav2Vec2StyleEncoder.forward on one utterance: (per-second logits, units)."""
    inputs = WAV2VEC2_BASE_FEATURES(torch.from_numpy(wav), sampling_rate=16_000, return_tensors="pt").input_values
    with torch.no_grad():
        h = m.projector(m.wav2vec2(inputs)[0])
        b, t, p = h.shape
        pooled = torch.cat([h[:, i : i + pool_size].mean(1) for i in range(0, t, pool_size)], 1).view(b, -1, p)
        logits = m.classifier(pooled)
        units = torch.argmax(torch.log_softmax(logits, -1), -1).squeeze(0)
    return logits.numpy()[0], units.numpy()


def real_speech():
    return [np.tile(load_audio(AMFM), 3), load_audio(DATA / "vm-intro.wav"), load_audio(DATA / "agent-loginok.wav")]


def test_matches_reference_style_encoder_batched():
    m = hf_classifier()
    cfg = style_config_from_hf(m.config.to_dict())
    params = style_params({k: v.detach() for k, v in m.state_dict().items()}, cfg)
    wavs = real_speech()  # 2.7 s, 5.7 s, 0.9 s: different lengths, one padded batch of raw audio
    batch = np.zeros((len(wavs), max(len(w) for w in wavs)), np.float32)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    logits, units = jax.jit(lambda p, w, n: StyleEncoder(cfg).apply({"params": p}, w, n))(
        params, jnp.asarray(batch), jnp.asarray([len(w) for w in wavs])
    )
    for i, w in enumerate(wavs):
        ref_logits, ref_units = reference_style(m, w)
        c = int(units[i])
        assert c == ref_logits.shape[0] == -(-cfg.encoder.frames(len(w)) // 50)
        assert np.abs(np.asarray(logits[i, :c]) - ref_logits).max() <= 1e-4
        np.testing.assert_array_equal(np.asarray(logits[i, :c]).argmax(-1), ref_units)


def test_normalisation_matches_wav2vec2_feature_extractor():
    wavs = [3.0 * w + 0.1 for w in real_speech()]
    batch = np.zeros((3, max(len(w) for w in wavs)), np.float32)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    ours = np.asarray(normalize_batch(jnp.asarray(batch), jnp.asarray([len(w) for w in wavs])))
    for i, w in enumerate(wavs):
        ref = WAV2VEC2_BASE_FEATURES(w, sampling_rate=16000).input_values[0]
        assert np.abs(normalize(w) - ref).max() <= 1e-5
        assert np.abs(ours[i, : len(w)] - ref).max() <= 1e-5  # 1e-5: float32 mean/var reduction order
        assert not ours[i, len(w) :].any()


def test_converter_and_tokenizer(tmp_path):
    m = hf_classifier(seed=1)
    m.save_pretrained(tmp_path / "hf")
    tok = StyleTokenizer.load(convert(tmp_path / "hf", tmp_path / "jax"))
    wav = load_audio(DATA / "vm-intro.wav")
    units = tok.encode_units(wav)
    np.testing.assert_array_equal(units, reference_style(m, wav)[1])
    assert len(units) == 6  # 5.7 s -> one unit per started second
    batch = tok.logits([wav, wav[:20000]])
    assert [len(x) for x in batch] == [6, 2]
    np.testing.assert_array_equal(batch[1].argmax(-1), reference_style(m, wav[:20000])[1])
    with pytest.raises(ValueError, match="shorter than one wav2vec2 frame"):
        tok.logits([wav[:100]])


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="last wav2vec2 layer"):
        StyleConfig(encoder=HubertConfig(conv_layers=STANDARD_50HZ, output_layer=11))
    with pytest.raises(FileNotFoundError, match="not a converted style encoder"):
        StyleTokenizer.load(tmp_path)


def test_weighted_layer_sum_config_converts_as_the_reference_runs_it(tmp_path):
    """use_weighted_layer_sum=true: the reference's Wav2Vec2StyleEncoder.forward classifies the last hidden
    state whatever the flag says (layer_weights unused); the conversion gives its units. transformers' own
    Wav2Vec2ForSequenceClassification would pool a softmax-weighted sum of layers instead (checked to
    differ here, so the test would see a converter that followed it)."""
    m = hf_classifier(seed=2, weighted=True)
    assert m.config.use_weighted_layer_sum and "layer_weights" in m.state_dict()
    m.save_pretrained(tmp_path / "hf")
    tok = StyleTokenizer.load(convert(tmp_path / "hf", tmp_path / "jax"))
    wav = load_audio(DATA / "vm-intro.wav")
    ref_logits, ref_units = reference_style(m, wav)
    np.testing.assert_array_equal(tok.encode_units(wav), ref_units)
    assert np.abs(tok.logits([wav])[0] - ref_logits).max() <= 1e-4
    inputs = WAV2VEC2_BASE_FEATURES(torch.from_numpy(wav), sampling_rate=16_000, return_tensors="pt").input_values
    with torch.no_grad():
        hs = torch.stack(m.wav2vec2(inputs, output_hidden_states=True).hidden_states, 1)
        summed = (hs * torch.softmax(m.layer_weights, -1).view(-1, 1, 1)).sum(1)
    assert (summed - m.wav2vec2(inputs)[0]).abs().max() > 1e-3  # the weighted sum is another input
