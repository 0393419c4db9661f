"""Grow a text LLaMA's embedding and LM head to the Spirit LM vocabulary (docs/reference.md, token layout).

Existing rows are kept bit for bit; the new rows (markers, HuBERT, pitch, style and padding ids) are
drawn from N(0, init_std^2), as the paper initialises the new embeddings randomly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spiritlm_jax.model.config import LlamaConfig


def extend_vocab(params, cfg: LlamaConfig, new_vocab_size: int, rng: jax.Array, init_std: float | None = None):
    """Return (params, cfg) with `new_vocab_size` rows in `embed` and (if untied) columns in `lm_head`."""
    old = cfg.vocab_size
    if new_vocab_size < old:
        raise ValueError(f"new vocabulary size {new_vocab_size} is smaller than the current {old}")
    if new_vocab_size == old:
        return params, cfg
    std = cfg.init_std if init_std is None else init_std
    k_emb, k_head = jax.random.split(rng)
    emb_vd = params["embed"]["embedding"]
    if emb_vd.shape[0] != old:
        raise ValueError(f"embed/embedding has {emb_vd.shape[0]} rows but the config says vocab_size={old}")
    new_rows = std * jax.random.normal(k_emb, (new_vocab_size - old, emb_vd.shape[1]), jnp.float32)
    params = dict(params)
    params["embed"] = {"embedding": jnp.concatenate([emb_vd, new_rows.astype(emb_vd.dtype)], axis=0)}
    if not cfg.tie_embeddings:
        head_dv = params["lm_head"]["kernel"]
        new_cols = std * jax.random.normal(k_head, (head_dv.shape[0], new_vocab_size - old), jnp.float32)
        params["lm_head"] = {"kernel": jnp.concatenate([head_dv, new_cols.astype(head_dv.dtype)], axis=1)}
    return params, cfg.replace(vocab_size=new_vocab_size)
