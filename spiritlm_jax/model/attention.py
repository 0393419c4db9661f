"""The one attention entry point, with backends.

Masking is defined once, by `attention_mask`: a query attends to a key iff the key's slot index is
not after the query's (causal, in cache/sequence slot coordinates) and both carry the same segment
id. Segment id 0 marks padding; padding only sees padding, so no row is ever fully masked (no NaN).
Packed documents get distinct segment ids and therefore never see each other, on every backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BACKENDS = ("xla", "cudnn")


def attention_mask(q_segment_ids_bt, kv_segment_ids_bs, q_offset=0):
    """Boolean mask [B, T, S]: causal over slots (query t sits at slot q_offset + t) and same segment."""
    t = q_segment_ids_bt.shape[1]
    s = kv_segment_ids_bs.shape[1]
    q_slot_t = q_offset + jnp.arange(t, dtype=jnp.int32)
    causal_ts = q_slot_t[:, None] >= jnp.arange(s, dtype=jnp.int32)[None, :]
    same_bts = q_segment_ids_bt[:, :, None] == kv_segment_ids_bs[:, None, :]
    return causal_ts[None] & same_bts


def _xla_attention(q_btnh, k_bskh, v_bskh, mask_bts, scale):
    b, t, n, h = q_btnh.shape
    kh = k_bskh.shape[2]
    q_btkgh = q_btnh.reshape(b, t, kh, n // kh, h)
    logits_bkgts = jnp.einsum("btkgh,bskh->bkgts", q_btkgh, k_bskh, preferred_element_type=jnp.float32)
    logits_bkgts = logits_bkgts * scale
    big_neg = jnp.finfo(jnp.float32).min
    logits_bkgts = jnp.where(mask_bts[:, None, None], logits_bkgts, big_neg)
    probs_bkgts = jax.nn.softmax(logits_bkgts, axis=-1).astype(v_bskh.dtype)
    out_btkgh = jnp.einsum("bkgts,bskh->btkgh", probs_bkgts, v_bskh, preferred_element_type=jnp.float32)
    return out_btkgh.reshape(b, t, n, h).astype(q_btnh.dtype)


def _cudnn_attention(q_btnh, k_bskh, v_bskh, mask_bts, scale):
    # The full boolean mask is passed explicitly, so segment ids are honoured (never a bare is_causal).
    out = jax.nn.dot_product_attention(
        q_btnh, k_bskh, v_bskh, mask=mask_bts[:, None], scale=scale, implementation="cudnn"
    )
    return out.astype(q_btnh.dtype)


def attention(q_btnh, k_bskh, v_bskh, q_segment_ids_bt, kv_segment_ids_bs, q_offset=0, backend="xla"):
    """Grouped-query attention. q: [B,T,N,H]; k, v: [B,S,K,H] with N % K == 0. Returns [B,T,N,H].

    `q_offset` is the slot of the first query among the keys (0 for a full sequence, the cache write
    index when decoding).
    """
    if q_btnh.shape[2] % k_bskh.shape[2]:
        raise ValueError(f"query heads {q_btnh.shape[2]} not a multiple of kv heads {k_bskh.shape[2]}")
    scale = q_btnh.shape[-1] ** -0.5
    mask_bts = attention_mask(q_segment_ids_bt, kv_segment_ids_bs, q_offset)
    if backend == "xla":
        return _xla_attention(q_btnh, k_bskh, v_bskh, mask_bts, scale)
    if backend == "cudnn":
        if jax.default_backend() != "gpu":
            raise ValueError(f"attention backend 'cudnn' needs a GPU; this process runs on {jax.default_backend()}")
        return _cudnn_attention(q_btnh, k_bskh, v_bskh, mask_bts, scale)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
