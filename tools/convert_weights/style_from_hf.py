"""Import the style encoder (`style_encoder_w2v2/{config.json, pytorch_model.bin}`, a transformers
Wav2Vec2ForSequenceClassification) into DIR/style.yaml (StyleConfig) + DIR/params (Orbax).

    python tools/convert_weights/style_from_hf.py --src style_encoder_w2v2 --out DIR

The wav2vec2 encoder goes through hubert_from_hf (same architecture, all layers kept); projector and
classifier are Dense layers. Missing, extra or mis-shaped tensors are errors naming them. A config with
`use_weighted_layer_sum=true` converts as the reference runs it: its style encoder classifies the last
hidden state whatever the flag says, so `layer_weights` is not used (tested against its forward).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.io import save_component  # noqa: E402
from spiritlm_jax.speech.style import STYLE_SPEC, StyleConfig  # noqa: E402
from tools.convert_weights.common import CheckedTensors, ConversionError, converter_main  # noqa: E402
from tools.convert_weights.hubert_from_hf import hubert_config_from_hf, params_from_hf_state_dict, read_hf_dir  # noqa: E402

__all__ = ["ConversionError", "convert", "style_params"]


def style_config_from_hf(hf: dict, source: str = "config.json") -> StyleConfig:
    # use_weighted_layer_sum: the reference's style encoder overrides forward and classifies the last
    # hidden state (`self.wav2vec2(inputs)[0]`) whatever the flag says, so the flag changes nothing and its
    # `layer_weights` tensor is unused (style_params skips it), exactly as there
    num_labels = len(hf.get("id2label") or {}) or int(hf.get("num_labels", 100))
    return StyleConfig(
        encoder=hubert_config_from_hf(hf, None, source),
        proj_size=int(hf.get("classifier_proj_size", 256)),
        num_labels=num_labels,
    )


def style_params(sd: dict, cfg: StyleConfig, source: str = "state dict") -> dict:
    params = {"wav2vec2": params_from_hf_state_dict(sd, cfg.encoder, prefix="wav2vec2.", source=source)}
    t = CheckedTensors(sd, source)
    for name, (i, o) in (
        ("projector", (cfg.encoder.hidden, cfg.proj_size)),
        ("classifier", (cfg.proj_size, cfg.num_labels)),
    ):
        params[name] = {"kernel": t.take(f"{name}.weight", (o, i)).T, "bias": t.take(f"{name}.bias", (o,))}
    t.check_all_used(ignore_prefixes=("wav2vec2.", "layer_weights"))  # layer_weights: unused by the reference
    return params


def convert(hf_dir, out_dir) -> Path:
    hf, sd = read_hf_dir(hf_dir)
    cfg = style_config_from_hf(hf, f"{hf_dir}/config.json")
    return save_component(out_dir, STYLE_SPEC, style_params(sd, cfg, str(hf_dir)), {"style.yaml": cfg})


@dataclasses.dataclass(frozen=True)
class Args:
    src: str  # style_encoder_w2v2 directory (transformers Wav2Vec2ForSequenceClassification)
    out: str  # output style encoder directory (must not hold params/ yet)


def main(argv=None) -> int:
    return converter_main(Args, argv, __file__, __doc__, lambda a: convert(a.src, a.out))


if __name__ == "__main__":
    sys.exit(main())
