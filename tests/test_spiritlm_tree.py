"""The whole reference checkpoint tree (docs/reference.md, checkpoint files) imported in one command, and the EXPRESSIVE
speech tokenizer it yields, end to end against the PyTorch reference pieces.

The tree is built here in the reference's file formats from PyTorch modules with random weights
(fairseq-named HuBERT + MLP quantizer, the F0 VQ-VAE of the published architecture, a transformers
Wav2Vec2ForSequenceClassification style encoder, HiFi-GAN generator.pt files, a Hugging Face Llama
directory); FCPE is torchfcpe's real bundled model, as in the reference. The EXPRESSIVE string of a
real recording must equal the reference's merge (`units_to_string`, golden-tested in test_tokens.py)
of the units the PyTorch pieces give: HuBERT features -> MLP -> blank fill, torchfcpe F0 -> VQ-VAE,
wav2vec2 -> projector -> per-second pooling -> classifier. Units are compared exactly (the per-piece
tolerances are in test_hubert.py, test_f0_vqvae.py and test_style.py).
"""

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

from spiritlm_jax.bundle import BundleManifest, read_manifest
from spiritlm_jax.data.pipeline import DEMO_CORPUS
from spiritlm_jax.inference.spiritlm import GenerationConfig, OutputModality, SpiritLM
from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.tokenizer import SpeechTokenizer
from spiritlm_jax.tokens import TokenLayout, string_to_units, units_to_string
from tests.fcpe_reference import bundled_model, spiritlm_f0
from tests.test_convert_hifigan import EXPRESSIVE
from tests.test_convert_hifigan import write_release as write_hifigan
from tests.test_convert_speech import OUT_LAYER
from tests.test_convert_speech import write_release as write_hubert
from tests.test_f0_vqvae import _write_reference_files, build, reference_inputs
from tests.test_hubert import hf_layer
from tests.test_quantizer import reference_fill
from tests.test_style import hf_classifier, reference_style
from tools.convert_weights import spiritlm_checkpoints

AMFM = Path(importlib.util.find_spec("amfm_decompy").submodule_search_locations[0]) / "sample.wav"
DATA = Path(__file__).parent / "data"


def write_llama(d: Path, vocab: int) -> None:
    torch.manual_seed(0)
    cfg = HFLlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        rope_theta=1e5,
    )
    LlamaForCausalLM(cfg).eval().save_pretrained(d)
    shutil.copy(DEMO_CORPUS / "tokenizer.model", d / "tokenizer.model")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A $SPIRITLM_CHECKPOINTS_DIR with every file of the reference layout, and the reference models."""
    from tests.test_convert_speech import CONV, HF_LAYERS
    from tests.test_hubert import hf_model
    from tests.test_quantizer import torch_mlp

    root = tmp_path_factory.mktemp("spiritlm_checkpoints")
    st = root / "speech_tokenizer"
    (st / "hubert_25hz").mkdir(parents=True)
    hubert, quant = hf_model(CONV, pos_k=15, layers=HF_LAYERS), torch_mlp(20, 64, 64, seed=3)
    write_hubert(st / "hubert_25hz", hubert, quant)
    tracks = [spiritlm_f0(bundled_model(), load_audio(AMFM))]
    vqvae, vq_cfg, _ = build("public", tracks, seed=5)
    _write_reference_files(st / "vqvae_f0_quantizer", vqvae, "public")
    style = hf_classifier(seed=1, labels=100)
    style.save_pretrained(st / "style_encoder_w2v2")
    voc_cfg = dataclasses.replace(EXPRESSIVE, num_embeddings=501)  # every HuBERT id the LM can generate
    _, release = write_hifigan(tmp_path_factory.mktemp("voc"), voc_cfg)
    shutil.move(str(release), str(st / "hifigan_spiritlm_expressive_w2v2"))
    sp_vocab = 512  # the demo tokenizer's size
    lm_dir = root / "spiritlm_model" / "spirit-lm-expressive-7b"
    write_llama(lm_dir, TokenLayout(sp_vocab, True).vocab_size)
    return {"root": root, "hubert": hubert, "quant": quant, "vqvae": vqvae, "vq_cfg": vq_cfg, "style": style}


@pytest.fixture(scope="module")
def converted(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    assert (
        spiritlm_checkpoints.main(
            ["--src", str(tree["root"]), "--out", str(out), "--dtype", "float32", "--hubert-layer", str(OUT_LAYER)]
        )
        == 0
    )
    return out


def reference_units(tree, wav: np.ndarray) -> dict:
    """The reference SpiritLMTokenizer's streams for one chunk, computed by the PyTorch pieces."""
    feats = hf_layer(tree["hubert"], wav, OUT_LAYER)
    with torch.no_grad():
        hubert = reference_fill(torch.log_softmax(tree["quant"](torch.from_numpy(feats)), -1).argmax(-1).numpy(), 20)
        f0, vuv = spiritlm_f0(bundled_model(), wav)
        pitch = tree["vqvae"](reference_inputs(f0, vuv, tree["vq_cfg"].features))[0][0][0].numpy()
    _, style = reference_style(tree["style"], wav)
    return {"hubert": hubert, "pitch": pitch, "style": np.atleast_1d(style)}


def test_tree_summary_and_layout(tree, converted):
    summary = json.loads((converted / "spiritlm_tree.json").read_text())["components"]
    assert {k: v["status"] for k, v in summary.items()} == {
        "hubert": "converted",
        "f0_vqvae": "converted",
        "fcpe": "converted",
        "style": "converted",
        "vocoder_base": "missing",
        "vocoder_expressive": "converted",
        "lm_base": "missing",
        "lm_expressive": "converted",
    }
    for rel in (
        "speech_tokenizer/hubert.yaml",
        "speech_tokenizer/quantizer.yaml",
        "speech_tokenizer/fcpe/fcpe.yaml",
        "speech_tokenizer/f0_vqvae/f0_vqvae.yaml",
        "speech_tokenizer/style/style.yaml",
        "vocoder/expressive/config.yaml",
        "spirit-lm-expressive-7b/config.yaml",
        "spirit-lm-expressive-7b/tokenizer.model",
    ):
        assert (converted / rel).is_file(), rel
    assert not (converted / ".partial").exists()
    # each LM folder is a bundle: EXPRESSIVE by its kind, the tree's speech tokenizer and vocoder, relative paths
    assert read_manifest(converted / "spirit-lm-expressive-7b") == BundleManifest(
        expressive=True, lm=".", tokenizer=".", speech_tokenizer="../speech_tokenizer", vocoder="../vocoder/expressive"
    )


def test_expressive_string_matches_the_reference_pieces(tree, converted):
    tok = SpeechTokenizer.load(converted / "speech_tokenizer")
    assert tok.expressive
    for wav in (load_audio(AMFM), load_audio(DATA / "vm-intro.wav")):
        ref = reference_units(tree, wav)
        units = tok.encode_units(wav)
        for k in ("hubert", "pitch", "style"):
            np.testing.assert_array_equal(units[k], ref[k], err_msg=k)
        assert len(units["style"]) == -(-len(wav) // 16000)  # one per started second
        s = tok.encode_string(wav)
        assert s == units_to_string(**ref) and s.startswith("[St")
        back = string_to_units(s)  # the vocoder's input: every stream at the HuBERT length
        assert len(back["hubert"]) == len(back["pitch"]) == len(back["style"])
    # many files at once (padded batches, sorted by length) = each alone
    wavs = [load_audio(DATA / "vm-intro.wav"), load_audio(AMFM), load_audio(AMFM)[:5000]]
    for got, wav in zip(tok.encode_units_batch(wavs), wavs):
        want = tok.encode_units(wav)
        assert set(got) == {"hubert", "pitch", "style"}
        for k in got:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    base = SpeechTokenizer.load(converted / "speech_tokenizer", expressive=False)
    assert not base.expressive and "[Pi" not in base.encode_string(AMFM)


def test_spiritlm_loads_the_converted_tree(converted):
    for path, kw in (
        (converted / "spirit-lm-expressive-7b", {}),
        (converted, {"variant": "expressive"}),
        (converted, {}),
    ):
        lm = SpiritLM.from_checkpoint(path, dtype="float32", **kw)
        assert lm.layout.expressive and lm.speech_tokenizer.expressive and lm.vocoder is not None
    prompt = lm.build_prompt([("speech", str(AMFM))], OutputModality.SPEECH)
    assert prompt.startswith("[Speech][St") and "[Pi" in prompt
    out = lm.generate(
        [("speech", str(AMFM))],
        output_modality=OutputModality.SPEECH,
        generation_config=GenerationConfig(max_new_tokens=12),
        seed=0,
    )
    assert len(out) == 1 and out[0].content.ndim == 1 and out[0].content.size > 0
    with pytest.raises(ValueError, match="variant"):
        SpiritLM.from_checkpoint(converted, variant="base")


def test_rerun_skips_and_a_bad_component_is_reported(tree, converted, tmp_path, capsys):
    assert spiritlm_checkpoints.main(["--src", str(tree["root"]), "--out", str(converted)]) == 0
    assert "0 converted, 6 already there, 2 missing, 0 failed" in capsys.readouterr().out
    # a copy of the tree with a truncated style checkpoint: style fails, the others still convert
    src = tmp_path / "tree"
    shutil.copytree(
        tree["root"] / "speech_tokenizer" / "hifigan_spiritlm_expressive_w2v2",
        src / "speech_tokenizer" / "hifigan_spiritlm_expressive_w2v2",
    )
    style = src / "speech_tokenizer" / "style_encoder_w2v2"
    shutil.copytree(tree["root"] / "speech_tokenizer" / "style_encoder_w2v2", style)
    weights = next(p for p in style.iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "out"
    assert spiritlm_checkpoints.main(["--src", str(src), "--out", str(out)]) == 1
    summary = json.loads((out / "spiritlm_tree.json").read_text())["components"]
    assert summary["style"]["status"] == "failed" and weights.name in summary["style"]["detail"]
    assert summary["vocoder_expressive"]["status"] == "converted"
    assert not (out / "speech_tokenizer" / "style").exists()
    assert spiritlm_checkpoints.main(["--src", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert spiritlm_checkpoints.main(["--src", str(src), "--out", str(out), "--only", "nope"]) == 2


def test_prepare_with_the_expressive_tokenizer(converted, tmp_path):
    """`python -m spiritlm_jax.prepare --tokenizer expressive:DIR` writes all three streams."""
    from spiritlm_jax.data.sources import read_examples
    from spiritlm_jax.prepare import main as prepare_main

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"audio": str(AMFM)})
        + "\n"
        + json.dumps({"audio": str(DATA / "vm-intro.wav"), "text": "hello"})
        + "\n"
    )
    out = tmp_path / "corpus"
    assert (
        prepare_main(
            [
                "--out",
                str(out),
                "--manifest",
                str(manifest),
                "--tokenizer",
                f"expressive:{converted / 'speech_tokenizer'}",
                "--format",
                "jsonl",
            ]
        )
        == 0
    )
    summary = json.loads((out / "corpus.json").read_text())
    assert summary["layout"]["expressive"] is True
    examples = read_examples(out / "speech" / "audio-00000.jsonl")
    tok = SpeechTokenizer.load(converted / "speech_tokenizer")
    assert len(examples) == 2
    for ex, wav in zip(examples, (AMFM, DATA / "vm-intro.wav")):
        want = tok.encode_units(wav)
        for k in ("hubert", "pitch", "style"):
            np.testing.assert_array_equal(ex[k], want[k], err_msg=k)
