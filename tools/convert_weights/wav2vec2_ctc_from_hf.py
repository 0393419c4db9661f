"""Import a transformers Wav2Vec2ForCTC directory (config.json + model.safetensors or pytorch_model.bin
+ vocab.json [+ tokenizer_config.json, preprocessor_config.json]) into DIR/ctc.yaml
(Wav2Vec2CTCConfig, vocabulary included) + DIR/params (Orbax): the CTC model of
`python -m spiritlm_jax.align --aligner ctc:DIR`.

    python tools/convert_weights/wav2vec2_ctc_from_hf.py --src mms-300m-1130-forced-aligner --out ctc_aligner

Both layouts: group-norm extractor + post-LN layers (wav2vec2-base; its encoder goes through
hubert_from_hf, the same architecture) and layer-norm extractor + stable-layer-norm pre-LN layers
(wav2vec2-large-lv60, XLS-R, MMS). The blank is `--blank LABEL`, else the label `<blank>` when the
vocabulary has one (MMS forced-aligner conversions), else config.json's pad_token_id; the word delimiter
tokenizer_config.json's word_delimiter_token ("|" by default), the input normalisation
preprocessor_config.json's do_normalize (true by default). Adapters (MMS-1b-all's per-language
adapter_attn_dim), and any missing, extra or mis-shaped tensor, are errors naming them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.io import save_component  # noqa: E402
from spiritlm_jax.speech.wav2vec2 import CTC_SPEC, Wav2Vec2CTCConfig  # noqa: E402
from tools.convert_weights.common import CheckedTensors, ConversionError, converter_main, fold_weight_norm  # noqa: E402
from tools.convert_weights.hubert_from_hf import (  # noqa: E402
    TRAINING_ONLY,
    encoder_sizes_from_hf,
    hubert_config_from_hf,
    params_from_hf_state_dict,
    read_hf_dir,
)

__all__ = ["ConversionError", "convert", "ctc_config_from_hf", "ctc_params"]


def _read_json(path: Path, default: dict) -> dict:
    return json.loads(path.read_text()) if path.is_file() else default


def read_labels(vocab: dict, source: str) -> tuple[str, ...]:
    """vocab.json {label: id} -> labels in id order (ids must be 0..V-1)."""
    if vocab and all(isinstance(v, dict) for v in vocab.values()):  # multilingual {lang: {label: id}}
        raise ConversionError(f"{source}: a per-language vocab.json; keep the one language's vocabulary")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise ConversionError(f"{source}: ids are not 0..{len(ids) - 1}")
    by_id = {i: lab for lab, i in vocab.items()}
    return tuple(by_id[i] for i in range(len(ids)))


def ctc_config_from_hf(
    hf: dict, labels: tuple[str, ...], extra: dict, source: str = "config.json"
) -> Wav2Vec2CTCConfig:
    """The CTC config of a transformers config.json (+ vocabulary, tokenizer/preprocessor settings)."""
    if hf.get("adapter_attn_dim") is not None or hf.get("add_adapter", False):
        raise ConversionError(f"{source}: adapter layers (adapter_attn_dim / add_adapter) are not supported")
    if int(hf.get("vocab_size", len(labels))) != len(labels):
        raise ConversionError(f"{source}: vocab_size {hf.get('vocab_size')} != {len(labels)} labels in vocab.json")
    stable = bool(hf.get("do_stable_layer_norm", False))
    if stable:
        for key, wanted in (
            ("feat_extract_norm", "layer"),
            ("hidden_act", "gelu"),
            ("feat_extract_activation", "gelu"),
            ("conv_pos_batch_norm", False),
        ):
            if hf.get(key, wanted) != wanted:
                raise ConversionError(f"{source}: {key}={hf.get(key)!r} is not supported with do_stable_layer_norm")
        enc = encoder_sizes_from_hf(hf, None, source)
    else:
        enc = hubert_config_from_hf(hf, None, source)
    if extra.get("blank") is not None:
        if extra["blank"] not in labels:
            raise ConversionError(f"{source}: blank label {extra['blank']!r} is not in vocab.json")
        blank = labels.index(extra["blank"])
    elif "<blank>" in labels:  # MMS forced-aligner conversions: <blank> is the CTC blank, <pad> is not
        blank = labels.index("<blank>")
    elif hf.get("pad_token_id") is not None:
        blank = int(hf["pad_token_id"])
    else:
        blank = labels.index("<pad>") if "<pad>" in labels else 0
    delim = extra.get("word_delimiter_token", "|")
    try:
        return Wav2Vec2CTCConfig(
            encoder=enc,
            stable_layer_norm=stable,
            conv_bias=bool(hf.get("conv_bias", False)),
            labels=labels,
            blank=blank,
            word_delimiter=delim if delim in labels else "",
            normalize_input=bool(extra.get("do_normalize", True)),
        )
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from None


def _stable_encoder_params(sd, cfg: Wav2Vec2CTCConfig, source: str) -> dict:
    enc = cfg.encoder
    t = CheckedTensors(sd, source, "wav2vec2.")
    dense = lambda p, i, o: {"kernel": t.take(p + ".weight", (o, i)).T, "bias": t.take(p + ".bias", (o,))}  # noqa: E731
    ln = lambda p, n: {"scale": t.take(p + ".weight", (n,)), "bias": t.take(p + ".bias", (n,))}  # noqa: E731
    out, c_in, d = {}, 1, enc.hidden
    for i, (c, k, _) in enumerate(enc.conv_layers):
        p = f"feature_extractor.conv_layers.{i}."
        out[f"conv_{i}"] = t.take(p + "conv.weight", (c, c_in, k)).transpose(2, 1, 0)
        if cfg.conv_bias:
            out[f"conv_{i}_bias"] = t.take(p + "conv.bias", (c,))
        out[f"conv_{i}_norm"] = ln(p + "layer_norm", c)
        c_in = c
    out["layer_norm"] = ln("feature_projection.layer_norm", c_in)
    out["post_extract_proj"] = dense("feature_projection.projection", c_in, d)
    pc = "encoder.pos_conv_embed.conv."
    k, g = enc.pos_conv_kernel, enc.pos_conv_groups
    names = (
        ("weight_g", "weight_v")
        if t.has(pc + "weight_g")
        else ("parametrizations.weight.original0", "parametrizations.weight.original1")
    )
    w = fold_weight_norm(t.take(pc + names[0], (1, 1, k)), t.take(pc + names[1], (d, d // g, k)), dim=2)
    out["pos_conv"] = w.transpose(2, 1, 0)
    out["pos_conv_bias"] = t.take(pc + "bias", (d,))
    for i in range(enc.num_layers):
        p, q = f"encoder.layers.{i}.", f"layers_{i}_"
        out[q + "self_attn"] = {
            n: dense(p + f"attention.{n}", d, d) for n in ("q_proj", "k_proj", "v_proj", "out_proj")
        }
        out[q + "self_attn_layer_norm"] = ln(p + "layer_norm", d)
        out[q + "final_layer_norm"] = ln(p + "final_layer_norm", d)
        out[q + "fc1"] = dense(p + "feed_forward.intermediate_dense", d, enc.ffn)
        out[q + "fc2"] = dense(p + "feed_forward.output_dense", enc.ffn, d)
    out["encoder_layer_norm"] = ln("encoder.layer_norm", d)
    t.check_all_used(ignore_prefixes=TRAINING_ONLY)
    return out


def ctc_params(sd: dict, cfg: Wav2Vec2CTCConfig, source: str = "state dict") -> dict:
    if cfg.stable_layer_norm:
        enc = _stable_encoder_params(sd, cfg, source)
    else:
        enc = params_from_hf_state_dict(sd, cfg.encoder, prefix="wav2vec2.", source=source)
    t = CheckedTensors(sd, source)
    v, d = len(cfg.labels), cfg.encoder.hidden
    head = {"kernel": t.take("lm_head.weight", (v, d)).T, "bias": t.take("lm_head.bias", (v,))}
    t.check_all_used(ignore_prefixes=("wav2vec2.",))
    return {"wav2vec2": enc, "lm_head": head}


def convert(hf_dir, out_dir, blank: Optional[str] = None) -> Path:
    d = Path(hf_dir)
    if not (d / "vocab.json").is_file():
        raise FileNotFoundError(f"{d} has no vocab.json (the CTC vocabulary)")
    hf, sd = read_hf_dir(d)
    labels = read_labels(json.loads((d / "vocab.json").read_text()), f"{d}/vocab.json")
    extra = {
        **_read_json(d / "tokenizer_config.json", {}),
        **{k: v for k, v in _read_json(d / "preprocessor_config.json", {}).items() if k == "do_normalize"},
        "blank": blank,
    }
    cfg = ctc_config_from_hf(hf, labels, extra, f"{d}/config.json")
    return save_component(out_dir, CTC_SPEC, ctc_params(sd, cfg, str(d)), {"ctc.yaml": cfg})


@dataclasses.dataclass(frozen=True)
class Args:
    src: str  # transformers Wav2Vec2ForCTC directory (config.json, weights, vocab.json)
    out: str  # output CTC model directory (must not hold params/ yet)
    blank: Optional[str] = None  # the blank's label (default: <blank> if in vocab.json, else pad_token_id)


def main(argv=None) -> int:
    return converter_main(Args, argv, __file__, __doc__, lambda a: convert(a.src, a.out, a.blank))


if __name__ == "__main__":
    sys.exit(main())
