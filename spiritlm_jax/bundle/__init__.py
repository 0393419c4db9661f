"""The bundle: LM + text tokenizer + speech tokenizer + vocoder, read and written as one directory.

- `lm`: the LM component (LM_SPEC for spiritlm_jax.io), `save_lm`, `load_lm`, `load_pretrained`, `load_extra`
- `text_tokenizer`: TOKENIZER_FILES, `load_text_tokenizer`, `copy_tokenizer_files`
- `manifest`: bundle.yaml (`BundleManifest`) and `decide_expressive`, the one EXPRESSIVE rule
- `train_layout`: the item layout of a training run's checkpoints (shared with spiritlm_jax.training)
- `load`: `Bundle`, `load_bundle`, `save_bundle`, `write_bundle_manifest`
"""

from spiritlm_jax.bundle.lm import LM_SPEC, load_extra, load_lm, load_pretrained, save_lm
from spiritlm_jax.bundle.load import (
    Bundle,
    load_bundle,
    load_speech_tokenizer,
    resolve_bundle_dir,
    save_bundle,
    write_bundle_manifest,
)
from spiritlm_jax.bundle.manifest import MANIFEST, BundleManifest, decide_expressive, read_manifest, write_manifest
from spiritlm_jax.bundle.text_tokenizer import TOKENIZER_FILES, copy_tokenizer_files, load_text_tokenizer

__all__ = [
    "LM_SPEC",
    "MANIFEST",
    "TOKENIZER_FILES",
    "Bundle",
    "BundleManifest",
    "copy_tokenizer_files",
    "decide_expressive",
    "load_bundle",
    "load_extra",
    "load_lm",
    "load_pretrained",
    "load_speech_tokenizer",
    "load_text_tokenizer",
    "read_manifest",
    "resolve_bundle_dir",
    "save_bundle",
    "save_lm",
    "write_bundle_manifest",
    "write_manifest",
]
