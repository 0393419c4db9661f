"""Style encoder parity with transformers' Wav2Vec2ForSequenceClassification (random weights, fp32)
on real speech, computed the way the reference style encoder does (encoder -> projector -> 50-frame
chunk means -> classifier), batched with padding. Tolerance: logits <= 1e-4, argmax units equal."""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.hubert import STANDARD_50HZ, HubertConfig
from spiritlm_jax.speech.style import StyleConfig, StyleEncoder, normalize
from tools.convert_weights.hubert_from_hf import params_from_hf_state_dict

AMFM = Path(importlib.util.find_spec("amfm_decompy").submodule_search_locations[0]) / "sample.wav"
DATA = Path(__file__).parent / "data"


def test_matches_transformers_sequence_classifier():
    conv = tuple((32, k, s) for _, k, s in STANDARD_50HZ)
    hf_cfg = Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                            conv_dim=[c for c, _, _ in conv], conv_kernel=[k for _, k, _ in conv],
                            conv_stride=[s for _, _, s in conv], conv_bias=False, feat_extract_norm="group",
                            do_stable_layer_norm=False, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            classifier_proj_size=24, num_labels=10)
    torch.manual_seed(0)
    m = Wav2Vec2ForSequenceClassification(hf_cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    enc = HubertConfig(conv_layers=conv, hidden=64, num_layers=2, num_heads=4, ffn=96, pos_conv_kernel=16,
                       pos_conv_groups=4, output_layer=2)
    cfg = StyleConfig(encoder=enc, proj_size=24, num_labels=10)
    sd = {k: v.detach().float().numpy() for k, v in m.state_dict().items()}
    params = {"wav2vec2": params_from_hf_state_dict(sd, enc, prefix="wav2vec2."),
              "projector": {"kernel": sd["projector.weight"].T, "bias": sd["projector.bias"]},
              "classifier": {"kernel": sd["classifier.weight"].T, "bias": sd["classifier.bias"]}}
    wavs = [normalize(np.tile(load_audio(AMFM), 3)), normalize(load_audio(DATA / "vm-intro.wav"))]  # 2.7 s, 5.7 s
    n = max(len(w) for w in wavs)
    batch = np.zeros((2, n), np.float32)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    logits, chunks = StyleEncoder(cfg).apply({"params": params}, jnp.asarray(batch), jnp.asarray([len(w) for w in wavs]))
    for i, w in enumerate(wavs):
        with torch.no_grad():
            h = m.projector(m.wav2vec2(torch.from_numpy(w[None]))[0])
            pooled = torch.stack([h[:, j:j + 50].mean(1) for j in range(0, h.shape[1], 50)], 1)
            ref = m.classifier(pooled).numpy()[0]
        c = int(chunks[i])
        assert c == ref.shape[0] and c == -(-h.shape[1] // 50)
        assert np.abs(np.asarray(logits[i, :c]) - ref).max() <= 1e-4
        assert (np.asarray(logits[i, :c]).argmax(-1) == ref.argmax(-1)).all()


def test_converter_and_tokenizer(tmp_path):
    from spiritlm_jax.speech.style import StyleTokenizer
    from tools.convert_weights.style_from_hf import convert

    conv = tuple((32, k, s) for _, k, s in STANDARD_50HZ)
    hf_cfg = Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                            conv_dim=[c for c, _, _ in conv], conv_kernel=[k for _, k, _ in conv],
                            conv_stride=[s for _, _, s in conv], conv_bias=False, feat_extract_norm="group",
                            do_stable_layer_norm=False, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            classifier_proj_size=24, num_labels=10)
    torch.manual_seed(1)
    m = Wav2Vec2ForSequenceClassification(hf_cfg).eval()
    m.save_pretrained(tmp_path / "hf")
    tok = StyleTokenizer.load(convert(tmp_path / "hf", tmp_path / "jax"))
    wav = load_audio(DATA / "vm-intro.wav")
    units = tok.encode_units(wav)
    with torch.no_grad():
        h = m.projector(m.wav2vec2(torch.from_numpy(normalize(wav)[None]))[0])
        pooled = torch.stack([h[:, j:j + 50].mean(1) for j in range(0, h.shape[1], 50)], 1)
        ref = m.classifier(pooled).argmax(-1).numpy()[0]
    np.testing.assert_array_equal(units, ref)
    assert len(units) == 6  # 5.7 s -> one unit per started second
