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


def _one_row_attention(q_bnh, k_new_bkh, v_new_bkh, k_bksh, v_bksh, mask_bs, scale):
    """One query row per sequence (a decode step) over the cache layer as it was before this step
    plus the row's own key/value, softmax taken over both parts together. The layer is only read
    (its new slot is written after the layer scan), so the cache is never copied."""
    b, n, h = q_bnh.shape
    kh = k_bksh.shape[1]
    q_bkgh = q_bnh.reshape(b, kh, n // kh, h)
    cache_bkgs = jnp.einsum("bkgh,bksh->bkgs", q_bkgh, k_bksh, preferred_element_type=jnp.float32) * scale
    cache_bkgs = jnp.where(mask_bs[:, None, None], cache_bkgs, jnp.finfo(jnp.float32).min)
    own_bkg = jnp.einsum("bkgh,bkh->bkg", q_bkgh, k_new_bkh, preferred_element_type=jnp.float32) * scale
    top_bkg = jnp.maximum(cache_bkgs.max(-1), own_bkg)
    cache_bkgs = jnp.exp(cache_bkgs - top_bkg[..., None])
    own_bkg = jnp.exp(own_bkg - top_bkg)
    out_bkgh = jnp.einsum(
        "bkgs,bksh->bkgh", cache_bkgs.astype(v_bksh.dtype), v_bksh, preferred_element_type=jnp.float32
    )
    out_bkgh = out_bkgh + own_bkg[..., None] * v_new_bkh[:, :, None].astype(jnp.float32)
    out_bkgh = out_bkgh / (cache_bkgs.sum(-1) + own_bkg)[..., None]
    return out_bkgh.reshape(b, n, h)


def cached_attention(q_btnh, k_btkh, v_btkh, k_cache, v_cache, layer, index, mask_bts, backend="xla"):
    """Attention of T new queries (at cache slots index .. index+T-1) over one layer of a KV cache
    held as one buffer per layer (`k_cache`, `v_cache`: tuples of [B, K, S, H]), `layer` a traced
    index (the layer scan's): `lax.switch` picks the layer's buffers, which are read where they lie.
    `mask_bts` [B, T, S] (slots of the cache after this chunk is written) is built once per step by
    the caller. The cache is not written here: the caller writes the new keys/values after the layer
    scan, so reads and the in-place write never overlap.

    A single query row (every decode step) uses `_one_row_attention` over the old contents plus the
    row's own key; longer chunks (prefill) write into a copy of the layer and run the backend's
    kernel (cudnn, else xla).
    """
    if q_btnh.shape[2] % k_btkh.shape[2]:
        raise ValueError(f"query heads {q_btnh.shape[2]} not a multiple of kv heads {k_btkh.shape[2]}")
    scale = q_btnh.shape[-1] ** -0.5
    t, s = q_btnh.shape[1], k_cache[0].shape[2]

    def one_layer(i):
        def run(q_btnh, k_btkh, v_btkh, k_cache, v_cache):
            if t == 1:
                mask_bs = mask_bts[:, 0] & (jnp.arange(s) != index)  # the own slot is added separately
                out_bnh = _one_row_attention(
                    q_btnh[:, 0], k_btkh[:, 0], v_btkh[:, 0], k_cache[i], v_cache[i], mask_bs, scale
                )
                return out_bnh[:, None].astype(q_btnh.dtype)
            k_bskh, v_bskh = (
                jax.lax.dynamic_update_slice_in_dim(c[i].astype(q_btnh.dtype).transpose(0, 2, 1, 3), new, index, 1)
                for c, new in ((k_cache, k_btkh), (v_cache, v_btkh))
            )
            if backend == "cudnn":
                return _cudnn_attention(q_btnh, k_bskh, v_bskh, mask_bts, scale)
            return _xla_attention(q_btnh, k_bskh, v_bskh, mask_bts, scale)

        return run

    branches = [one_layer(i) for i in range(len(k_cache))]
    return jax.lax.switch(layer, branches, q_btnh, k_btkh, v_btkh, k_cache, v_cache)
