"""The language model as a component: its ComponentSpec, save/load of an LM directory, and the LM
of a training run (read from the run's Orbax checkpoints, see `train_layout`).

    DIR/config.yaml     the LlamaConfig (spiritlm_jax.config format)
    DIR/params/         the parameter pytree (Orbax), shape-checked against the config (spiritlm_jax.io)
    DIR/extra.json      optional provenance (e.g. the source's HF config.json), `load_extra`
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from spiritlm_jax.bundle import train_layout
from spiritlm_jax.config import from_dict
from spiritlm_jax.io import ComponentSpec, check_shapes, load_component, save_component, tree_shapes
from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.llama import Llama

LM_CONFIG = "config.yaml"
EXTRA_FILE = "extra.json"
SHAPE_FIELDS = frozenset(
    {"vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "tie_embeddings"}
)


def abstract_lm_params(cfg: LlamaConfig):
    """The LM's parameter pytree as ShapeDtypeStructs (an eval_shape of Llama's init: no allocation)."""
    abstract = jax.eval_shape(lambda: Llama(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))
    return nn.unbox(abstract["params"])


LM_SPEC = ComponentSpec(
    kind="language model",
    configs={LM_CONFIG: LlamaConfig},
    abstract_params=lambda cfgs: abstract_lm_params(cfgs[LM_CONFIG]),
    hint="convert one with tools/convert_weights/llama_from_hf.py, or train one (python -m spiritlm_jax.train)",
)


def save_lm(directory: str | Path, params, cfg: LlamaConfig, extra: Optional[dict] = None) -> Path:
    """Write an LM directory (params + config.yaml, + `extra` as extra.json); shapes are checked first."""
    d = save_component(directory, LM_SPEC, params, {LM_CONFIG: cfg})
    if extra is not None:
        (d / EXTRA_FILE).write_text(json.dumps(extra, indent=2, sort_keys=True))
    return d


def load_extra(directory: str | Path) -> dict:
    """The `extra` dict given to `save_lm` ({} when there was none)."""
    path = Path(directory) / EXTRA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def is_lm_dir(directory: str | Path) -> bool:
    d = Path(directory)
    return (d / LM_CONFIG).is_file() and (d / "params").is_dir()


def load_lm(directory: str | Path, shardings=None, param_dtype: Optional[str] = None) -> tuple[LlamaConfig, Any]:
    """(LlamaConfig, params) of an LM directory, or of the latest checkpoint of a training run
    (the run directory or its checkpoints/ directory).

    `shardings`: an optional NamedSharding pytree (same structure as params) to restore onto a mesh;
    `param_dtype` ("float32"/"bfloat16") casts the stored parameters and is recorded in the config."""
    d = Path(directory).absolute()
    if not d.is_dir():
        raise FileNotFoundError(f"checkpoint directory {d} does not exist")
    ckpts = train_layout.checkpoints_dir(d)
    if ckpts is not None and not (d / "params").exists():
        return _load_from_train_checkpoints(ckpts, shardings, param_dtype)
    if not (d / LM_CONFIG).is_file():
        raise FileNotFoundError(f"{d} has no {LM_CONFIG} (is it a spiritlm_jax model directory?)")
    params, cfgs = load_component(d, LM_SPEC, shardings=shardings, dtype=param_dtype)
    cfg = cfgs[LM_CONFIG]
    return (cfg.replace(param_dtype=param_dtype) if param_dtype is not None else cfg), params


def _load_from_train_checkpoints(ckpts: Path, shardings, param_dtype: Optional[str]) -> tuple[LlamaConfig, Any]:
    params, meta = train_layout.restore_params(ckpts)
    cfg = from_dict(LlamaConfig, train_layout.lm_config_dict(meta))
    check_shapes(tree_shapes(params), tree_shapes(abstract_lm_params(cfg)), f"training run {ckpts.parent}")
    if param_dtype is not None:
        cfg = cfg.replace(param_dtype=param_dtype)
        params = jax.tree.map(lambda x: x.astype(param_dtype), params)
    if shardings is not None:
        params = jax.device_put(params, shardings)
    return cfg, params


def load_pretrained(directory, shardings=None, **config_overrides) -> tuple[Llama, Any]:
    """(Llama module, params) of an LM directory or a training run.

        model, params = load_pretrained(DIR)
        logits_btv = model.apply({"params": params}, tokens_bt)

    `config_overrides` change numerics only (e.g. dtype="float32", attention="cudnn", remat=...);
    `param_dtype` also casts the stored parameters. `shardings`: a NamedSharding pytree to restore onto.
    """
    unknown = set(config_overrides) - {f.name for f in dataclasses.fields(LlamaConfig)}
    if unknown:
        raise ValueError(f"unknown LlamaConfig field(s) {sorted(unknown)} in load_pretrained({directory})")
    bad = SHAPE_FIELDS & set(config_overrides)
    if bad:
        raise ValueError(f"cannot override shape fields {sorted(bad)} when loading {directory}")
    param_dtype = config_overrides.pop("param_dtype", None)
    cfg, params = load_lm(directory, shardings, param_dtype=param_dtype)
    if config_overrides:
        cfg = cfg.replace(**config_overrides)
    return Llama(cfg), params
