"""Transformers HubertModel / Wav2Vec2 encoder weights -> our HuBERT parameter tree.

    python tools/convert_weights/hubert_from_hf.py --src HF_DIR --out DIR [--layer 11] \
        [--quantizer L11_quantizer_500.pt]

Used for a transformers HubertModel directory (config.json + model.safetensors or pytorch_model.bin),
and (with prefix "wav2vec2.") for the style encoder's Wav2Vec2ForSequenceClassification, whose
encoder has the same architecture. The weight-normed positional conv is folded whether stored as
weight_g/weight_v or as parametrizations.weight.original0/1. Only the group-norm extractor with
post-LN layers (HuBERT/wav2vec2 Base, `do_stable_layer_norm=false`) is supported; anything else,
and any missing, extra or mis-shaped tensor, is an error naming it. Output: the SpeechTokenizer
directory (hubert.yaml [+ quantizer.yaml] + params/, Orbax).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.io import save_component  # noqa: E402
from spiritlm_jax.speech.hubert import HubertConfig  # noqa: E402
from spiritlm_jax.speech.tokenizer import SPEECH_TOKENIZER_SPEC  # noqa: E402
from tools.convert_weights.common import (  # noqa: E402
    CheckedTensors,
    ConversionError,
    NamedTensors,
    converter_main,
    fold_weight_norm,
    read_json,
)
from tools.convert_weights.speech_quantizer_from_pt import load_quantizer_checkpoint, mlp_quantizer_params  # noqa: E402

__all__ = [
    "ConversionError",
    "convert",
    "encoder_sizes_from_hf",
    "hubert_config_from_hf",
    "params_from_hf_state_dict",
    "read_hf_dir",
]

TRAINING_ONLY = ("masked_spec_embed",)  # mask embedding used only when pre-training/fine-tuning


def hubert_config_from_hf(hf: dict, output_layer: int | None = None, source: str = "config.json") -> HubertConfig:
    def need(key, default, wanted):
        if hf.get(key, default) != wanted:
            raise ConversionError(
                f"{source}: {key}={hf.get(key)!r} is not supported (HuBERT/wav2vec2 Base use {wanted!r})"
            )

    need("feat_extract_norm", "group", "group")
    need("do_stable_layer_norm", False, False)  # post-LN layers
    need("conv_bias", False, False)
    need("hidden_act", "gelu", "gelu")
    need("feat_extract_activation", "gelu", "gelu")
    need("feat_proj_layer_norm", True, True)
    need("conv_pos_batch_norm", False, False)
    return encoder_sizes_from_hf(hf, output_layer, source)


def encoder_sizes_from_hf(hf: dict, output_layer: int | None = None, source: str = "config.json") -> HubertConfig:
    """The HubertConfig sizes of a transformers HuBERT/wav2vec2 config.json (no layout checks)."""
    try:
        layers = hf["num_hidden_layers"]
        return HubertConfig(
            conv_layers=tuple(zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"])),
            hidden=hf["hidden_size"],
            num_layers=layers,
            num_heads=hf["num_attention_heads"],
            ffn=hf["intermediate_size"],
            pos_conv_kernel=hf["num_conv_pos_embeddings"],
            pos_conv_groups=hf["num_conv_pos_embedding_groups"],
            output_layer=layers if output_layer is None else output_layer,
            layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        )
    except KeyError as e:
        raise ConversionError(f"{source}: missing key {e.args[0]!r}") from None
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from None


def params_from_hf_state_dict(
    sd, cfg: HubertConfig, prefix: str = "", source: str = "state dict", check_extra: bool = True
) -> dict:
    """HF state dict (name -> array/tensor) -> our HuBERT params (layers up to cfg.output_layer).

    With `check_extra`, any tensor under `prefix` that is not used (training-only ones aside) is an error."""
    t = CheckedTensors(sd, source, prefix)
    dense = lambda p, i, o: {"kernel": t.take(p + ".weight", (o, i)).T, "bias": t.take(p + ".bias", (o,))}  # noqa: E731
    ln = lambda p, n: {"scale": t.take(p + ".weight", (n,)), "bias": t.take(p + ".bias", (n,))}  # noqa: E731
    d, c_in = cfg.hidden, 1
    fe = {}
    for i, (c, k, _) in enumerate(cfg.conv_layers):
        fe[f"conv_{i}"] = t.take(f"feature_extractor.conv_layers.{i}.conv.weight", (c, c_in, k)).transpose(2, 1, 0)
        c_in = c
    c0, c_last = cfg.conv_layers[0][0], cfg.conv_layers[-1][0]
    fe["norm_scale"] = t.take("feature_extractor.conv_layers.0.layer_norm.weight", (c0,))
    fe["norm_bias"] = t.take("feature_extractor.conv_layers.0.layer_norm.bias", (c0,))
    pc = "encoder.pos_conv_embed.conv."
    k, g = cfg.pos_conv_kernel, cfg.pos_conv_groups
    legacy = t.has(pc + "weight_g") or t.has(pc + "weight_v")  # torch weight_norm, else its parametrization
    names = (
        ("weight_g", "weight_v")
        if legacy
        else ("parametrizations.weight.original0", "parametrizations.weight.original1")
    )
    w = fold_weight_norm(t.take(pc + names[0], (1, 1, k)), t.take(pc + names[1], (d, d // g, k)), dim=2)
    out = {
        "feature_extractor": fe,
        "layer_norm": ln("feature_projection.layer_norm", c_last),
        "post_extract_proj": dense("feature_projection.projection", c_last, d),
        "pos_conv": w.transpose(2, 1, 0),
        "pos_conv_bias": t.take(pc + "bias", (d,)),
        "encoder_layer_norm": ln("encoder.layer_norm", d),
    }
    for i in range(cfg.num_layers if check_extra else cfg.output_layer):
        p = f"encoder.layers.{i}."
        layer = {
            "self_attn": {n: dense(p + f"attention.{n}", d, d) for n in ("q_proj", "k_proj", "v_proj", "out_proj")},
            "self_attn_layer_norm": ln(p + "layer_norm", d),
            "final_layer_norm": ln(p + "final_layer_norm", d),
            "fc1": dense(p + "feed_forward.intermediate_dense", d, cfg.ffn),
            "fc2": dense(p + "feed_forward.output_dense", cfg.ffn, d),
        }
        if i < cfg.output_layer:  # later layers are checked but not kept: they are never run
            out[f"layers_{i}"] = layer
    if check_extra:
        t.check_all_used(ignore_prefixes=TRAINING_ONLY)
    return out


def read_hf_dir(hf_dir) -> tuple[dict, dict]:
    """(config.json dict, state dict name -> float32 numpy) from a transformers model directory."""
    d = Path(hf_dir)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{d} has no config.json (expected a transformers model directory)")
    tensors = NamedTensors.open(d, ("model.safetensors", "pytorch_model.bin"))
    return read_json(d / "config.json", "config"), {name: tensors.get(name) for name in tensors.names_by_file()}


def convert(hf_dir, out_dir, output_layer: int = 11, quantizer_pt=None) -> Path:
    hf, sd = read_hf_dir(hf_dir)
    cfg = hubert_config_from_hf(hf, output_layer, f"{hf_dir}/config.json")
    params = {"hubert": params_from_hf_state_dict(sd, cfg, source=str(hf_dir))}
    qcfg = None
    if quantizer_pt is not None:
        qcfg, params["quantizer"] = mlp_quantizer_params(load_quantizer_checkpoint(quantizer_pt), str(quantizer_pt))
        if qcfg.dim != cfg.hidden:
            raise ConversionError(f"{quantizer_pt}: quantizer dim {qcfg.dim} does not match HuBERT width {cfg.hidden}")
    return save_component(
        out_dir, SPEECH_TOKENIZER_SPEC, params, {"hubert.yaml": cfg, **({"quantizer.yaml": qcfg} if qcfg else {})}
    )


@dataclasses.dataclass(frozen=True)
class Args:
    src: str  # transformers HubertModel directory (config.json + model.safetensors or pytorch_model.bin)
    out: str  # output speech tokenizer directory (must not hold params/ yet)
    layer: int = 11  # output layer (1-based); later layers are not run
    quantizer: Optional[str] = None  # an MLP quantizer .pt (L11_quantizer_500.pt layout)


def main(argv=None) -> int:
    return converter_main(Args, argv, __file__, __doc__, lambda a: convert(a.src, a.out, a.layer, a.quantizer))


if __name__ == "__main__":
    sys.exit(main())
