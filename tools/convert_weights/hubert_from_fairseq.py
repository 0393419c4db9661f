"""Import the official HuBERT units tokenizer: mhubert_base_25hz.pt (+ L11_quantizer_500.pt).

    python tools/convert_weights/hubert_from_fairseq.py --src mhubert_base_25hz.pt \
        --quantizer L11_quantizer_500.pt --out DIR [--layer 11]

mhubert_base_25hz.pt: {model_cfg, task_cfg, model_weight, dictionaries_symbols} with fairseq key names
(docs/reference.md). The conv stack is read from model_cfg["conv_feature_layers"] (parsed, never eval'd);
the positional conv is weight-normed over dim 2 (weight_g/weight_v, or torch's parametrizations
original0/original1) and folded here; model_cfg's required_seq_len_multiple and task_cfg's normalize
are kept in the config. `label_embs_concat`, `final_proj.*`, `mask_emb` (pre-training heads) are
dropped; any other missing, extra or mis-shaped tensor is an error naming it and both shapes.
Layers after `--layer` are checked but not stored (they are never run).

Output directory (the SpeechTokenizer format): DIR/hubert.yaml (HubertConfig), DIR/quantizer.yaml
(MLPQuantizerConfig, with --quantizer) and DIR/params (Orbax: {"hubert": ..., "quantizer": ...}).
"""

from __future__ import annotations

import ast
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
    converter_main,
    fold_weight_norm,
    load_torch_checkpoint,
)
from tools.convert_weights.speech_quantizer_from_pt import load_quantizer_checkpoint, mlp_quantizer_params  # noqa: E402

__all__ = ["ConversionError", "convert", "hubert_config", "hubert_params", "parse_conv_layers"]

PRETRAINING_ONLY = ("label_embs_concat", "final_proj.", "mask_emb", "target_glu.")


def parse_conv_layers(spec: str) -> tuple[tuple[int, int, int], ...]:
    """'[(512,10,5)] + [(512,3,2)] * 4 + ...' -> tuple of (dim, kernel, stride), without eval."""

    def ev(node):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ConversionError(f"conv_feature_layers {spec!r}: unsupported expression {ast.dump(node)[:60]}")

    try:
        layers = ev(ast.parse(spec, mode="eval").body)
    except SyntaxError as e:
        raise ConversionError(f"conv_feature_layers {spec!r} is not a Python list expression: {e}") from None
    if not isinstance(layers, list) or not all(isinstance(c, tuple) and len(c) == 3 for c in layers):
        raise ConversionError(f"conv_feature_layers {spec!r} is not a list of (dim, kernel, stride)")
    return tuple(tuple(int(v) for v in layer) for layer in layers)


def hubert_config(model_cfg: dict, output_layer: int, task_cfg: dict | None = None) -> HubertConfig:
    """HubertConfig from fairseq's model_cfg (+ task_cfg); unsupported variants are errors."""

    def unsupported(key, default, wanted):
        if model_cfg.get(key, default) != wanted:
            raise ConversionError(f"model_cfg {key}={model_cfg[key]!r} is not supported (HuBERT-Base uses {wanted!r})")

    unsupported("extractor_mode", "default", "default")  # group norm on the first conv only
    unsupported("layer_norm_first", False, False)  # post-LN
    unsupported("conv_bias", False, False)
    unsupported("layer_type", "transformer", "transformer")
    unsupported("activation_fn", "gelu", "gelu")
    unsupported("conv_pos_batch_norm", False, False)
    unsupported("pos_conv_depth", 1, 1)
    task_cfg = task_cfg or {}
    if int(task_cfg.get("sample_rate", 16000)) != 16000:
        raise ConversionError(f"task_cfg sample_rate={task_cfg['sample_rate']} is not supported (16000 only)")
    conv = parse_conv_layers(model_cfg.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"))
    hidden = int(model_cfg.get("encoder_embed_dim", 768))
    if conv[-1][0] == hidden:
        raise ConversionError(
            f"encoder_embed_dim {hidden} equals the conv width: a model without post_extract_proj is not supported"
        )
    try:
        return HubertConfig(
            conv_layers=conv,
            hidden=hidden,
            num_layers=int(model_cfg.get("encoder_layers", 12)),
            num_heads=int(model_cfg.get("encoder_attention_heads", 12)),
            ffn=int(model_cfg.get("encoder_ffn_embed_dim", 3072)),
            pos_conv_kernel=int(model_cfg.get("conv_pos", 128)),
            pos_conv_groups=int(model_cfg.get("conv_pos_groups", 16)),
            output_layer=output_layer,
            seq_len_multiple=int(model_cfg.get("required_seq_len_multiple", 2)),
            normalize_waveform=bool(task_cfg.get("normalize", False)),
        )
    except ValueError as e:
        raise ConversionError(f"model_cfg: {e}") from None


def hubert_params(sd: dict, cfg: HubertConfig, source: str = "model_weight") -> dict:
    """fairseq HuBERT state dict -> our parameter tree (layers up to cfg.output_layer)."""
    t = CheckedTensors(sd, source)
    dense = lambda p, i, o: {"kernel": t.take(p + ".weight", (o, i)).T, "bias": t.take(p + ".bias", (o,))}  # noqa: E731
    ln = lambda p, n: {"scale": t.take(p + ".weight", (n,)), "bias": t.take(p + ".bias", (n,))}  # noqa: E731
    d, c_last = cfg.hidden, cfg.conv_layers[-1][0]
    fe, c_in = {}, 1
    for i, (c, k, _) in enumerate(cfg.conv_layers):
        fe[f"conv_{i}"] = t.take(f"feature_extractor.conv_layers.{i}.0.weight", (c, c_in, k)).transpose(2, 1, 0)
        c_in = c
    c0 = cfg.conv_layers[0][0]
    fe["norm_scale"] = t.take("feature_extractor.conv_layers.0.2.weight", (c0,))
    fe["norm_bias"] = t.take("feature_extractor.conv_layers.0.2.bias", (c0,))
    k, g = cfg.pos_conv_kernel, cfg.pos_conv_groups
    pc = "encoder.pos_conv.0."
    legacy = t.has(pc + "weight_g") or t.has(pc + "weight_v")  # torch weight_norm, else its parametrization
    names = (
        ("weight_g", "weight_v")
        if legacy
        else ("parametrizations.weight.original0", "parametrizations.weight.original1")
    )
    w = fold_weight_norm(t.take(pc + names[0], (1, 1, k)), t.take(pc + names[1], (d, d // g, k)), dim=2)
    out = {
        "feature_extractor": fe,
        "layer_norm": ln("layer_norm", c_last),
        "post_extract_proj": dense("post_extract_proj", c_last, d),
        "pos_conv": w.transpose(2, 1, 0),
        "pos_conv_bias": t.take(pc + "bias", (d,)),
        "encoder_layer_norm": ln("encoder.layer_norm", d),
    }
    for i in range(cfg.num_layers):
        p = f"encoder.layers.{i}."
        layer = {
            "self_attn": {n: dense(p + f"self_attn.{n}", d, d) for n in ("q_proj", "k_proj", "v_proj", "out_proj")},
            "self_attn_layer_norm": ln(p + "self_attn_layer_norm", d),
            "final_layer_norm": ln(p + "final_layer_norm", d),
            "fc1": dense(p + "fc1", d, cfg.ffn),
            "fc2": dense(p + "fc2", cfg.ffn, d),
        }
        if i < cfg.output_layer:  # later layers are checked but not kept: they are never run
            out[f"layers_{i}"] = layer
    t.check_all_used(ignore_prefixes=PRETRAINING_ONLY)
    return out


def convert(hubert_pt, quantizer_pt, out_dir, output_layer: int = 11) -> Path:
    ck = load_torch_checkpoint(hubert_pt)
    if "model_weight" not in ck or "model_cfg" not in ck:
        raise ConversionError(
            f"{hubert_pt}: expected a dict with 'model_cfg' and 'model_weight', got keys {sorted(ck)}"
        )
    cfg = hubert_config(dict(ck["model_cfg"]), output_layer, dict(ck.get("task_cfg") or {}))
    params = {"hubert": hubert_params(ck["model_weight"], cfg, f"{hubert_pt}")}
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
    src: str  # mhubert_base_25hz.pt
    out: str  # output speech tokenizer directory (must not hold params/ yet)
    quantizer: Optional[str] = None  # L11_quantizer_500.pt
    layer: int = 11  # output layer (1-based); later layers are not run


def main(argv=None) -> int:
    return converter_main(Args, argv, __file__, __doc__, lambda a: convert(a.src, a.quantizer, a.out, a.layer))


if __name__ == "__main__":
    sys.exit(main())
