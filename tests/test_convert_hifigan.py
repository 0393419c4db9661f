"""Converter from the official generator.pt + config.json: files built from the test's PyTorch
reference CodeGenerator (official key names, torch weight_norm -> weight_g/weight_v), converted,
loaded as a Vocoder and compared waveform to waveform (max |diff| <= 1e-4, see test_hifigan.py);
broken files fail naming the key, the shapes or the field."""

import json

import numpy as np
import pytest
import torch

from spiritlm_jax.speech.hifigan import DurPredictorConfig, HifiGanConfig
from spiritlm_jax.speech.vocoder import Vocoder
from tests.test_hifigan import RefCodeGenerator
from tools.convert_weights.hifigan_from_pt import ConversionError, convert, main

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")

SMALL = dict(
    upsample_rates=(4, 2),
    upsample_kernel_sizes=(8, 4),
    upsample_initial_channel=16,
    resblock_kernel_sizes=(3, 5),
    resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)),
)
BASE = HifiGanConfig(
    num_embeddings=20,
    embedding_dim=8,
    num_speakers=4,
    num_styles=6,
    dur_predictor_params=DurPredictorConfig(8, 8, 3, 0.5),
    **SMALL,
)
EXPRESSIVE = HifiGanConfig(
    num_embeddings=20,
    embedding_dim=8,
    num_f0_tokens=64,
    num_style_tokens=100,
    num_speakers=3,
    multistyle=False,
    dur_predictor_params=DurPredictorConfig(8, 8, 3, 0.5),
    **SMALL,
)


def official_config_json(cfg: HifiGanConfig) -> dict:
    """The fields of a released config.json (with training-only fields, as they ship)."""
    d = {
        "resblock": "1",
        "batch_size": 16,
        "learning_rate": 0.0002,
        "segment_size": 8960,
        "num_workers": 4,
        "upsample_rates": list(cfg.upsample_rates),
        "upsample_kernel_sizes": list(cfg.upsample_kernel_sizes),
        "upsample_initial_channel": cfg.upsample_initial_channel,
        "resblock_kernel_sizes": list(cfg.resblock_kernel_sizes),
        "resblock_dilation_sizes": [list(x) for x in cfg.resblock_dilation_sizes],
        "num_embeddings": cfg.num_embeddings,
        "embedding_dim": cfg.embedding_dim,
        "model_in_dim": cfg.model_in_dim,
        "code_hop_size": 640,
        "sampling_rate": 16000,
        "multispkr": "from_input_file",
        "num_speakers": cfg.num_speakers,
        "dur_prediction_weight": 1.0,
        "dur_predictor_params": {
            "encoder_embed_dim": 8,
            "var_pred_hidden_dim": 8,
            "var_pred_kernel_size": 3,
            "var_pred_dropout": 0.5,
        },
    }
    if cfg.multistyle:
        d.update(multistyle="from_input_file", num_styles=cfg.num_styles)
    if cfg.num_f0_tokens:
        d.update(
            num_f0_tokens=cfg.num_f0_tokens,
            f0_hop_size=1280,
            num_style_tokens=cfg.num_style_tokens,
            style_hop_size=16000,
        )
    return d


def write_release(tmp_path, cfg, seed=0, names=True):
    ref = RefCodeGenerator(cfg).randomize(seed).eval()
    src = tmp_path / "release"
    src.mkdir()
    torch.save({"generator": ref.state_dict(), "optim_g": {}, "steps": 1000}, src / "generator.pt")
    (src / "config.json").write_text(json.dumps(official_config_json(cfg)))
    if names:
        (src / "speakers.txt").write_text("".join(f"spk{i}\n" for i in range(cfg.num_speakers)))
        if cfg.multistyle:
            (src / "styles.txt").write_text("".join(f"style{i}\n" for i in range(cfg.num_styles)))
    return ref, src


@pytest.mark.parametrize("cfg", [BASE, EXPRESSIVE], ids=["base", "expressive"])
def test_convert_release_files_and_vocode(tmp_path, cfg):
    ref, src = write_release(tmp_path, cfg)
    assert any(k.endswith("weight_g") for k in torch.load(src / "generator.pt")["generator"])
    out = convert(src, tmp_path / "jax")
    voc = Vocoder.load(out)
    assert voc.cfg == cfg and voc.speakers[1] == "spk1" and (voc.styles is not None) == cfg.multistyle
    rng = np.random.default_rng(1)
    code = rng.integers(0, 20, 23)
    pitch = rng.integers(0, 64, 23) if cfg.num_f0_tokens else None
    style = np.full(23, 81) if cfg.num_style_tokens else None
    with torch.no_grad():
        want = ref(
            torch.from_numpy(code),
            None if pitch is None else torch.from_numpy(pitch),
            None if style is None else torch.from_numpy(style),
            spkr=1,
            style=3,
            dur_pred=True,
        ).numpy()
    got = voc.vocode(
        {"hubert": code, "pitch": pitch, "style": style}, speaker="spk1", style="style3" if cfg.multistyle else None
    )
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4


def test_converter_errors_name_the_problem(tmp_path):
    ref, src = write_release(tmp_path, BASE)
    full = torch.load(src / "generator.pt")

    def with_generator(sd, name):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text((src / "config.json").read_text())
        torch.save({"generator": sd}, d / "generator.pt")
        return d

    sd = dict(full["generator"])
    del sd["resblocks.1.convs2.0.weight_v"], sd["resblocks.1.convs2.0.weight_g"]
    with pytest.raises(
        ConversionError, match=r"missing tensor resblocks.1.convs2.0.weight \(expected shape \(8, 8, 5\)\)"
    ):
        convert(with_generator(sd, "missing"), tmp_path / "o1")
    sd = dict(full["generator"])
    sd["ups.0.weight_v"] = torch.randn(16, 8, 7)
    sd["ups.0.weight_g"] = torch.ones(16, 1, 1)
    with pytest.raises(ConversionError, match=r"ups.0.weight has shape \(16, 8, 7\), expected \(16, 8, 8\)"):
        convert(with_generator(sd, "shape"), tmp_path / "o2")
    sd = dict(full["generator"], **{"f0_dict.weight": torch.zeros(64, 8)})
    with pytest.raises(ConversionError, match=r"unexpected tensor f0_dict.weight of shape \(64, 8\)"):
        convert(with_generator(sd, "extra"), tmp_path / "o3")
    sd = {k: v for k, v in full["generator"].items() if k != "conv_post.weight_g"}
    with pytest.raises(ConversionError, match="conv_post.weight_v has no matching conv_post.weight_g"):
        convert(with_generator(sd, "orphan"), tmp_path / "o4")

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((src / "config.json").read_text())
    blob = (src / "generator.pt").read_bytes()
    (truncated / "generator.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ConversionError, match="generator.pt cannot be read as a PyTorch checkpoint"):
        convert(truncated, tmp_path / "o5")
    torch.save({"model": {}}, truncated / "generator.pt")
    with pytest.raises(ConversionError, match="has no 'generator' key"):
        convert(truncated, tmp_path / "o6")
    (truncated / "generator.pt").unlink()
    with pytest.raises(FileNotFoundError, match="generator.pt does not exist"):
        convert(truncated, tmp_path / "o7")


def test_converter_config_errors(tmp_path):
    _, src = write_release(tmp_path, BASE, names=False)
    cfg = json.loads((src / "config.json").read_text())
    for change, message in [
        ({"model_in_dim": 80}, "model_in_dim 80 but the configured embeddings concatenate to 24"),
        ({"f0": True}, "f0=True .continuous F0 input. is not supported"),
        ({"upsample_kernel_sizes": [8]}, "same length"),
        ({"num_embeddings": None}, "num_embeddings"),
    ]:
        (src / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ConversionError, match=message):
            convert(src, tmp_path / "never")
    bad = dict(cfg)
    del bad["upsample_rates"]
    (src / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ConversionError, match="missing field upsample_rates"):
        convert(src, tmp_path / "never")
    (src / "config.json").write_text("{not json")
    with pytest.raises(ConversionError, match="not valid JSON"):
        convert(src, tmp_path / "never")


def test_cli_and_existing_output(tmp_path, capsys):
    _, src = write_release(tmp_path, BASE)
    assert main(["--src", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["--src", str(src), "--out", str(tmp_path / "out")]) == 2  # params/ exists: not overwritten
    assert "already exists" in capsys.readouterr().err
