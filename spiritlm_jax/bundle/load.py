"""A bundle: the LM + its text tokenizer (+ speech tokenizer, + vocoder), read with `load_bundle`.

What `load_bundle(path)` accepts (all described by a `bundle.yaml`, see manifest.py):
- a converted model directory (tools/convert_weights: config.yaml + params/ + tokenizer files),
- a training run directory (checkpoints/ + tokenizer files + the corpus' speech tokenizer, copied in),
- the root of a converted reference tree (spiritlm_tree.json, tools/convert_weights/
  spiritlm_checkpoints.py), where `variant` ("base" / "expressive") picks the LM when it holds both.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Optional

from spiritlm_jax import paths
from spiritlm_jax.bundle import train_layout
from spiritlm_jax.bundle.lm import load_pretrained, save_lm
from spiritlm_jax.bundle.manifest import MANIFEST, BundleManifest, decide_expressive, read_manifest, write_manifest
from spiritlm_jax.bundle.text_tokenizer import copy_tokenizer_files, load_text_tokenizer
from spiritlm_jax.config import from_dict
from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.llama import Llama
from spiritlm_jax.model.lora import LoraConfig, combine, merge_adapters
from spiritlm_jax.speech.kmeans import MelUnitTokenizer
from spiritlm_jax.speech.tokenizer import PITCH_DIRS, STYLE_DIR, SpeechTokenizer
from spiritlm_jax.speech.vocoder import Vocoder
from spiritlm_jax.tokens import SpiritTokenizer

TREE_MANIFEST = "spiritlm_tree.json"  # written by tools/convert_weights/spiritlm_checkpoints.py
HUBERT_MARKER = "hubert.yaml"  # a HuBERT speech tokenizer directory; otherwise a k-means one


@dataclasses.dataclass
class Bundle:
    """What generation needs: the LM (config + params), the text tokenizer, and optionally the speech
    tokenizer and vocoder. `expressive`: the text layout has pitch and style tokens."""

    path: Path
    lm_config: LlamaConfig
    params: Any
    tokenizer: SpiritTokenizer
    expressive: bool
    speech_tokenizer: Any = None
    vocoder: Optional[Vocoder] = None

    @property
    def model(self) -> Llama:
        return Llama(self.lm_config)


def save_bundle(
    directory: str | Path,
    params,
    cfg: LlamaConfig,
    tokenizer_src: Optional[str | Path] = None,
    expressive: Optional[bool] = None,
    extra: Optional[dict] = None,
) -> Path:
    """An LM directory that is a bundle: params + config.yaml (+ extra.json), the tokenizer files of
    `tokenizer_src` copied in, and bundle.yaml (`expressive` as `decide_expressive`)."""
    d = save_lm(directory, params, cfg, extra=extra)
    if tokenizer_src is not None:
        copy_tokenizer_files(tokenizer_src, d)
    write_bundle_manifest(d, expressive)
    return d


def write_bundle_manifest(
    directory: str | Path,
    expressive: Optional[bool] = None,
    lm: str = ".",
    speech_tokenizer: Optional[str] = None,
    vocoder: Optional[str] = None,
) -> BundleManifest:
    """bundle.yaml for the files now in `directory` (tokenizer files at its root). Without a readable
    tokenizer.model (none, or one SentencePiece cannot read) the declared `expressive` (default BASE)
    is recorded, with a warning for an unreadable one."""
    d = Path(directory)
    expr = bool(expressive)
    if (d / "tokenizer.model").is_file():
        try:
            expr = decide_expressive(d, expressive)
        except ValueError as e:
            print(
                f"warning: {d}: the text tokenizer cannot be read as a Spirit LM tokenizer ({e}); "
                f"bundle.yaml records expressive={expr}",
                file=sys.stderr,
            )
    manifest = BundleManifest(expressive=expr, lm=lm, tokenizer=".", speech_tokenizer=speech_tokenizer, vocoder=vocoder)
    write_manifest(d, manifest)
    return manifest


def resolve_bundle_dir(path: str | Path, variant: Optional[str] = None) -> Path:
    """The bundle directory of `path`: itself, or for a converted tree root the LM `variant` picks."""
    path = (paths.local_dir(path) if paths.is_remote(path) else Path(path)).absolute()  # a bucket: a local copy
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if (path / MANIFEST).is_file():
        return path
    if not (path / TREE_MANIFEST).is_file():
        hint = (
            ("; a run trained before bundles gets one by re-running its train command (it resumes at its last step)")
            if (path / "checkpoints").is_dir()
            else ""
        )
        raise FileNotFoundError(
            f"{path} has no {MANIFEST}: give a training run, a converted model directory "
            f"or a converted reference tree (tools/convert_weights){hint}"
        )
    summary = json.loads((path / TREE_MANIFEST).read_text()).get("components", {})
    models = sorted(
        path / e["output"]
        for name, e in summary.items()
        if name.startswith("lm_")
        and e.get("status") in ("converted", "exists")
        and (path / e["output"] / MANIFEST).is_file()
    )
    if variant is not None:
        models = [p for p in models if variant.lower() in p.name.lower()]
    if not models:
        which = f" matching variant={variant!r}" if variant is not None else ""
        raise ValueError(f"{path} is a converted tree without a language model{which}")
    if len(models) > 1:
        raise ValueError(
            f"{path} is a converted tree with language models {', '.join(p.name for p in models)}; "
            "pass variant='base' or 'expressive' (or the model's folder)"
        )
    return models[0]


def load_speech_tokenizer(directory: str | Path, expressive: bool, base_style_prompts: bool = False):
    """A HuBERT speech tokenizer (with pitch and style when `expressive`) or a k-means one. An EXPRESSIVE
    model whose speech tokenizer lacks its pitch or style component is an error naming it, unless the
    caller asks for BASE-style (HuBERT-only) prompts with `base_style_prompts=True`."""
    d = Path(directory)
    if not (d / HUBERT_MARKER).is_file():
        return MelUnitTokenizer(d)
    missing = [p for p in (*PITCH_DIRS, STYLE_DIR) if not (d / p).is_dir()]
    if expressive and missing and not base_style_prompts:
        raise ValueError(
            f"EXPRESSIVE model, but its speech tokenizer {d} has no {' / '.join(missing)} component "
            "(pitch and style units): convert it (tools/convert_weights), or pass base_style_prompts=True "
            "to prompt with HuBERT units only"
        )
    return SpeechTokenizer.load(d, expressive=expressive and not missing)


def load_adapted(d: Path, manifest: BundleManifest, **numerics) -> tuple[Llama, Any]:
    """A LoRA run (bundle.yaml names its `base`): the base LM with the run's adapters merged into its
    kernels (model.lora.merge_adapters), so the plain LLaMA runs it."""
    base_dir = d / manifest.base
    model, base_params = load_pretrained(
        resolve_bundle_dir(base_dir) / read_manifest(resolve_bundle_dir(base_dir)).lm, **numerics
    )
    adapters, meta = train_layout.restore_params(d / manifest.lm)
    lora = from_dict(LoraConfig, meta["config"].get("lora") or {})
    if not lora.enabled or not adapters:
        raise ValueError(f"{d}: bundle.yaml names a base but its checkpoints hold no LoRA adapters")
    try:
        params = merge_adapters(combine(base_params, adapters), lora)
    except KeyError as e:
        raise ValueError(f"{d}: adapter {e} has no kernel in the base {base_dir}") from None
    return model, params


def load_bundle(
    path: str | Path,
    variant: Optional[str] = None,
    vocoder: Optional[str | Path] = None,
    shardings=None,
    base_style_prompts: bool = False,
    **numerics,
) -> Bundle:
    """Read a bundle (see the module docstring). `vocoder` replaces the bundle's vocoder;
    `base_style_prompts` lets an EXPRESSIVE model load without pitch/style components (HuBERT-only
    prompts); `numerics` override dtype/attention of the LM (e.g. dtype="float32"; param_dtype casts)."""
    d = resolve_bundle_dir(path, variant)
    manifest = read_manifest(d)
    if manifest.base is not None:
        model, params = load_adapted(d, manifest, **numerics)
    else:
        model, params = load_pretrained(d / manifest.lm, shardings=shardings, **numerics)
    tokenizer = load_text_tokenizer(d / manifest.tokenizer, expressive=manifest.expressive)
    speech = (
        load_speech_tokenizer(d / manifest.speech_tokenizer, manifest.expressive, base_style_prompts)
        if manifest.speech_tokenizer is not None
        else None
    )
    voc_dir = Path(vocoder) if vocoder is not None else (d / manifest.vocoder if manifest.vocoder is not None else None)
    voc = Vocoder.load(voc_dir) if voc_dir is not None else None
    return Bundle(d, model.cfg, params, tokenizer, manifest.expressive, speech_tokenizer=speech, vocoder=voc)
