"""wav2vec2 CTC model parity with transformers' Wav2Vec2ForCTC (random weights, fp32) on real speech,
both layouts: group-norm extractor + post-LN layers (wav2vec2-base) and layer-norm extractor with
conv bias + stable-layer-norm pre-LN layers (large / XLS-R / MMS); through the converter
(save_pretrained directory + vocab.json) and batched with padding.

Tolerance: logits <= 1e-4 (O(1) activations; fp32 reassociation between XLA and PyTorch is ~1e-6).
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from spiritlm_jax.io import load_component
from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.hubert import STANDARD_50HZ
from spiritlm_jax.speech.wav2vec2 import CTC_SPEC, normalize
from spiritlm_jax.speech.wav2vec2 import Wav2Vec2ForCTC as JaxCTC
from tools.convert_weights.wav2vec2_ctc_from_hf import ConversionError, convert

DATA = Path(__file__).parent / "data"
CONV = tuple((32, k, s) for _, k, s in STANDARD_50HZ)  # narrow channels for speed; real kernels/strides
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "e", "t", "a", "o", "n"]


def hf_ctc(stable: bool, seed=0):
    cfg = Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        conv_dim=[c for c, _, _ in CONV],
        conv_kernel=[k for _, k, _ in CONV],
        conv_stride=[s for _, _, s in CONV],
        conv_bias=stable,
        feat_extract_norm="layer" if stable else "group",
        do_stable_layer_norm=stable,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        vocab_size=len(VOCAB),
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    m = Wav2Vec2ForCTC(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def speech():
    return [load_audio(DATA / "agent-pass.wav")[:32000], load_audio(DATA / "agent-loginok.wav")]


@pytest.mark.parametrize("stable", [False, True], ids=["base-postLN", "stable-preLN"])
def test_logits_match_transformers(tmp_path, speech, stable):
    m = hf_ctc(stable)
    hf_dir = tmp_path / "hf"
    m.save_pretrained(hf_dir)
    (hf_dir / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(VOCAB)}))
    (hf_dir / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    convert(hf_dir, tmp_path / "ctc")
    params, cfgs = load_component(tmp_path / "ctc", CTC_SPEC)
    cfg = cfgs["ctc.yaml"]
    assert cfg.stable_layer_norm == stable and cfg.labels == tuple(VOCAB) and cfg.blank == 0
    assert cfg.word_delimiter == "|" and cfg.frame_seconds == 0.02
    apply = jax.jit(JaxCTC(cfg).apply)
    refs = []
    for wav in speech:
        with torch.no_grad():
            refs.append(m(torch.from_numpy(normalize(wav))[None]).logits[0].numpy())
    # one at a time, then both in one padded batch: each item gets its unbatched logits
    errs = []
    for wav, ref in zip(speech, refs):
        got, frames = apply({"params": params}, jnp.asarray(wav)[None])
        assert got.shape[1:] == ref.shape and int(frames[0]) == ref.shape[0]
        errs.append(float(np.abs(np.asarray(got[0]) - ref).max()))
    n = max(len(w) for w in speech)
    batch = np.stack([np.pad(w, (0, n - len(w))) for w in speech])
    got, frames = apply({"params": params}, jnp.asarray(batch), jnp.asarray([len(w) for w in speech]))
    for i, ref in enumerate(refs):
        assert int(frames[i]) == ref.shape[0]
        errs.append(float(np.abs(np.asarray(got[i, : ref.shape[0]]) - ref).max()))
    print(f"max |logit diff| {'stable' if stable else 'base'}: {max(errs):.2e}")
    assert max(errs) <= 1e-4, errs


def test_converter_errors_name_the_problem(tmp_path):
    m = hf_ctc(True)
    hf_dir = tmp_path / "hf"
    m.save_pretrained(hf_dir)
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        convert(hf_dir, tmp_path / "a")
    (hf_dir / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(VOCAB[:-1])}))
    with pytest.raises(ConversionError, match="vocab_size"):
        convert(hf_dir, tmp_path / "b")
    cfg = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**cfg, "adapter_attn_dim": 16}))
    (hf_dir / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(VOCAB)}))
    with pytest.raises(ConversionError, match="adapter"):
        convert(hf_dir, tmp_path / "c")


def test_align_cli_with_a_converted_ctc_model(tmp_path):
    """`python -m spiritlm_jax.align --aligner ctc:DIR` end to end (random weights: spans are not
    meaningful, but every word is placed in order inside its recording)."""
    from spiritlm_jax.align import main
    from tests.test_align_cli import PROMPTS, check_words

    letters = ["<blank>", "<pad>", "</s>", "<unk>", "|", "'", *"abcdefghijklmnopqrstuvwxyz"]
    m = hf_ctc(True)
    m.lm_head = torch.nn.Linear(64, len(letters))
    m.config.vocab_size = len(letters)
    hf_dir = tmp_path / "hf"
    m.save_pretrained(hf_dir)
    (hf_dir / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(letters)}))
    convert(hf_dir, tmp_path / "ctc")
    assert load_component(tmp_path / "ctc", CTC_SPEC)[1]["ctc.yaml"].blank == 0  # <blank>, not pad_token_id
    manifest = tmp_path / "in.jsonl"
    manifest.write_text(
        "".join(json.dumps({"audio": str(DATA / f"{n}.wav"), "text": t}) + "\n" for n, t in PROMPTS.items())
    )
    out = tmp_path / "aligned.jsonl"
    args = ["--manifest", str(manifest), "--out", str(out), "--aligner", f"ctc:{tmp_path / 'ctc'}", "--star", "edges"]
    assert main(args + ["--no-progress"]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3
    for x in lines:
        check_words(x)

    # prepare --align ctc:DIR: a transcript the vocabulary cannot spell is that file's bad input
    from spiritlm_jax.prepare import main as prepare_main

    with open(manifest, "a") as f:
        f.write(json.dumps({"audio": str(DATA / "agent-loginok.wav"), "text": "Señor logged in."}) + "\n")
    corpus = tmp_path / "corpus"
    prep = ["--manifest", str(manifest), "--align", f"ctc:{tmp_path / 'ctc'}", "--out", str(corpus), "--no-progress"]
    assert prepare_main(prep) == 3
    assert json.loads((corpus / "corpus.json").read_text())["counts"]["aligned"] == 3
    bad = [json.loads(x) for x in (corpus / "bad_files.jsonl").read_text().splitlines()]
    assert len(bad) == 1 and "alignment failed" in bad[0]["reason"] and "'ñ'" in bad[0]["reason"]
