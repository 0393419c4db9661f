"""`bundle.yaml`: what a bundle directory holds, written by training, the converters and
`write_manifest`, read by `load_bundle`.

A bundle is the LM + its text tokenizer (+ a speech tokenizer and a vocoder when it has them).
Paths are relative to the bundle directory, so a bundle can be moved and used from any cwd.

EXPRESSIVE (pitch and style tokens in the vocabulary) is decided in one place, `decide_expressive`,
by one rule: it is the layout of the bundle's text tokenizer — what its files say (pitch/style
tokens present), or what the writer declares when the files do not say (a bare tokenizer.model,
e.g. a training run's `data.expressive`); a declaration that contradicts the files is an error.
The result is recorded here; readers never guess it again (not from the embedding size, nor from
the folders present).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from spiritlm_jax.bundle.text_tokenizer import load_text_tokenizer
from spiritlm_jax.config import from_dict, read_yaml, save_config

MANIFEST = "bundle.yaml"


@dataclasses.dataclass(frozen=True)
class BundleManifest:
    expressive: bool  # the text tokenizer's layout has pitch and style tokens
    lm: str = "."  # an LM directory (config.yaml + params/) or a training run's checkpoints/ directory
    tokenizer: str = "."  # the directory holding tokenizer.model (+ HF tokenizer files)
    speech_tokenizer: Optional[str] = None  # HuBERT (+ pitch/style) or k-means speech tokenizer directory
    vocoder: Optional[str] = None  # HiFi-GAN vocoder directory
    base: Optional[str] = None  # LoRA fine-tuning run: the bundle its adapters apply to (lm holds only adapters)


def decide_expressive(tokenizer: str | Path, declared: Optional[bool] = None) -> bool:
    """THE rule for EXPRESSIVE: the layout of the text tokenizer at `tokenizer` (a directory or a
    SentencePiece file), with `declared` used when its files do not say (see the module docstring)."""
    return load_text_tokenizer(tokenizer, expressive=declared).layout.expressive


def write_manifest(directory: str | Path, manifest: BundleManifest) -> Path:
    path = Path(directory) / MANIFEST
    save_config(manifest, path)
    return path


def read_manifest(directory: str | Path) -> BundleManifest:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{Path(directory)} has no {MANIFEST}: not a bundle (a training run, a converted "
            "model directory (tools/convert_weights) or a converted reference tree)"
        )
    return from_dict(BundleManifest, read_yaml(path))


def relative_to(target: str | Path, directory: str | Path) -> str:
    """`target` as a path relative to `directory` (what a manifest stores)."""
    return Path(os.path.relpath(Path(target).absolute(), Path(directory).absolute())).as_posix()
