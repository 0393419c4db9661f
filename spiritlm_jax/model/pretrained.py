"""`load_pretrained(DIR) -> (model, params)` for model directories and training runs."""

from __future__ import annotations

import dataclasses

from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.llama import Llama

SHAPE_FIELDS = frozenset({"vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                          "tie_embeddings"})


def load_pretrained(directory, shardings=None, **config_overrides):
    """Load a converted model (tools/convert_weights) or the latest checkpoint of a training run.

        model, params = load_pretrained(DIR)
        logits_btv = model.apply({"params": params}, tokens_bt)

    `config_overrides` change numerics only (e.g. dtype="float32", attention="cudnn", remat=...);
    `param_dtype` also casts the stored parameters. `shardings`: a NamedSharding pytree to restore onto.
    """
    from spiritlm_jax.checkpoint import load_model

    unknown = set(config_overrides) - {f.name for f in dataclasses.fields(LlamaConfig)}
    if unknown:
        raise ValueError(f"unknown LlamaConfig field(s) {sorted(unknown)} in load_pretrained({directory})")
    bad = SHAPE_FIELDS & set(config_overrides)
    if bad:
        raise ValueError(f"cannot override shape fields {sorted(bad)} when loading {directory}")
    param_dtype = config_overrides.pop("param_dtype", None)
    cfg, params = load_model(directory, shardings, param_dtype=param_dtype)
    if config_overrides:
        cfg = cfg.replace(**config_overrides)
    return Llama(cfg), params
