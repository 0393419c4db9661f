"""`load_pretrained(DIR) -> (model, params)` for model directories and training runs."""

from __future__ import annotations

from spiritlm_jax.model.llama import Llama


def load_pretrained(directory, shardings=None, **config_overrides):
    """Load a converted model (tools/convert_weights) or the latest checkpoint of a training run.

    `config_overrides` change numerics only (e.g. dtype="float32", attention="cudnn", remat=...).
    """
    from spiritlm_jax.checkpoint import load_model

    cfg, params = load_model(directory, shardings)
    shape_fields = {"vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "tie_embeddings"}
    bad = shape_fields & set(config_overrides)
    if bad:
        raise ValueError(f"cannot override shape fields {sorted(bad)} when loading {directory}")
    if config_overrides:
        cfg = cfg.replace(**config_overrides)
    return Llama(cfg), params
