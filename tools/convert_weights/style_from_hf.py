"""Import the style encoder (`style_encoder_w2v2/{config.json, pytorch_model.bin}`, a transformers
Wav2Vec2ForSequenceClassification) into DIR/style.yaml + DIR/params.

    python tools/convert_weights/style_from_hf.py --hf-dir style_encoder_w2v2 --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.speech.style import StyleConfig  # noqa: E402
from tools.convert_weights.common import run_cli  # noqa: E402
from tools.convert_weights.hubert_from_hf import (  # noqa: E402
    ConversionError, hubert_config_from_hf, params_from_hf_state_dict, read_hf_dir,
)


def convert(hf_dir, out_dir) -> Path:
    from spiritlm_jax.speech.style import save_style_encoder

    hf, sd = read_hf_dir(hf_dir)
    cfg = StyleConfig(encoder=hubert_config_from_hf(hf), proj_size=hf.get("classifier_proj_size", 256),
                      num_labels=len(hf.get("id2label", {})) or hf.get("num_labels", 100))
    params = {"wav2vec2": params_from_hf_state_dict(sd, cfg.encoder, prefix="wav2vec2.")}
    for name, (i, o) in (("projector", (cfg.encoder.hidden, cfg.proj_size)), ("classifier", (cfg.proj_size, cfg.num_labels))):
        for t, shape in (("weight", (o, i)), ("bias", (o,))):
            if f"{name}.{t}" not in sd:
                raise ConversionError(f"missing tensor {name}.{t}")
            if tuple(sd[f"{name}.{t}"].shape) != shape:
                raise ConversionError(f"tensor {name}.{t} has shape {tuple(sd[f'{name}.{t}'].shape)}, expected {shape}")
        params[name] = {"kernel": sd[f"{name}.weight"].T, "bias": sd[f"{name}.bias"]}
    return save_style_encoder(out_dir, params, cfg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf-dir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    return run_cli(lambda: convert(args.hf_dir, args.out))


if __name__ == "__main__":
    sys.exit(main())
