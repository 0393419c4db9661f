"""`python -m spiritlm_jax.merge --src RUN --out DIR`: a LoRA fine-tuning run -> a plain bundle.

The run's adapters are merged into its base's kernels (W + alpha/rank · A B, model/lora.py), and DIR
is written as a converted model directory: config.yaml + params/ + the tokenizer files + bundle.yaml
(the base's speech tokenizer and vocoder referenced). It loads without qwix, fine-tunes again as a
`base`, and exports with `python tools/convert_weights/llama_to_hf.py --src DIR --out HF_DIR`.
A full fine-tuning run (or any bundle) is written out the same way, unchanged.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional

from spiritlm_jax.bundle import load_bundle, read_manifest
from spiritlm_jax.bundle.load import save_bundle, write_bundle_manifest
from spiritlm_jax.config import run_cli

PROG = "python -m spiritlm_jax.merge"


@dataclasses.dataclass(frozen=True)
class MergeConfig:
    src: str  # a fine-tuning run (LoRA or full), or any bundle
    out: str  # the new bundle directory (must not hold a model yet)
    variant: Optional[str] = None  # base or expressive: the LM to use from a converted tree holding both


def merge(cfg: MergeConfig) -> int:
    out = Path(cfg.out)
    if (out / "config.yaml").exists():
        print(f"error: {out} already holds a model; choose a new --out", file=sys.stderr)
        return 2
    try:
        b = load_bundle(cfg.src, variant=cfg.variant)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: --src: {e}", file=sys.stderr)
        return 2
    m = read_manifest(b.path)
    save_bundle(out, b.params, b.lm_config, tokenizer_src=b.path / m.tokenizer, expressive=b.expressive)
    ref = lambda p: str((b.path / p).resolve()) if p else None  # noqa: E731
    write_bundle_manifest(out, b.expressive, speech_tokenizer=ref(m.speech_tokenizer), vocoder=ref(m.vocoder))
    print(f"merged {b.path} -> {out}")
    print(f"export to Hugging Face: python tools/convert_weights/llama_to_hf.py --src {out} --out HF_DIR")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_cli(MergeConfig, argv, PROG, merge, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
