"""LLaMA-2 decoder in Flax linen: RMSNorm, half-split RoPE, GQA, SwiGLU, scanned layers, KV cache.

Parameter tree (layers stacked on a leading axis by `nn.scan`; HF weights need transposes only):

    embed/embedding                 [V, D]        ("vocab", "embed")
    layers/attn_norm/scale          [L, D]        ("layers", "norm")
    layers/attn/{q,k,v}/kernel      [L, D, N|K, H] ("layers", "embed", "heads"|"kv_heads", "head_dim")
    layers/attn/o/kernel            [L, N, H, D]  ("layers", "heads", "head_dim", "embed")
    layers/mlp_norm/scale           [L, D]
    layers/mlp/{gate,up}/kernel     [L, D, F]     ("layers", "embed", "mlp")
    layers/mlp/down/kernel          [L, F, D]     ("layers", "mlp", "embed")
    final_norm/scale                [D]
    lm_head/kernel                  [D, V]        (absent when tie_embeddings)

Calling conventions:
    logits_btv = model.apply({"params": p}, tokens_bt)                      # full sequence
    logits_btv = model.apply(v, tokens_bt, positions_bt, segment_ids_bt)    # packed sequences
    logits_btv, cache = model.apply(v, tokens_bt, positions_bt, segment_ids_bt, cache=cache)  # decode
    hidden_btd = model.apply(v, tokens_bt, positions_bt, segment_ids_bt, return_hidden=True)  # final-norm
    logits_btv = head_logits(cfg, params, hidden_btd)  # the same logits, from the hidden states (chunked loss)
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from spiritlm_jax.model.attention import SplashBlocks, attention
from spiritlm_jax.model.config import LlamaConfig

Array = jax.Array


def _dtype(name: str):
    return jnp.dtype(name)


def rope_frequencies(head_dim: int, theta: float) -> Array:
    """inverse frequencies [H/2] as transformers computes them (fp32)."""
    return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def apply_rope(x_btnh: Array, positions_bt: Array, theta: float) -> Array:
    """Rotary embedding, half-split layout (transformers' `rotate_half`), computed in fp32."""
    h = x_btnh.shape[-1]
    inv_freq_f = rope_frequencies(h, theta)
    angles_btf = positions_bt.astype(jnp.float32)[..., None] * inv_freq_f
    cos_bt1f = jnp.cos(angles_btf)[:, :, None, :]
    sin_bt1f = jnp.sin(angles_btf)[:, :, None, :]
    x = x_btnh.astype(jnp.float32)
    x1, x2 = x[..., : h // 2], x[..., h // 2 :]
    out = jnp.concatenate([x1 * cos_bt1f - x2 * sin_bt1f, x2 * cos_bt1f + x1 * sin_bt1f], axis=-1)
    return out.astype(x_btnh.dtype)


class RMSNorm(nn.Module):
    eps: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x_btd: Array) -> Array:
        scale_d = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            (x_btd.shape[-1],),
            self.param_dtype,
        )
        x = x_btd.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        # transformers multiplies in the input dtype after casting back; do the same.
        return scale_d.astype(self.dtype) * x.astype(self.dtype)


# checkpoint_name of each projection's output, by module name (what the remat policies save; the
# splash kernel names its residuals "context").
CHECKPOINT_NAMES = {
    "q": "query_proj",
    "k": "key_proj",
    "v": "value_proj",
    "o": "out_proj",
    "gate": "mlp_gate",
    "up": "mlp_up",
    "down": "mlp_down",
}


def _tagged(module_name: Optional[str], x: Array) -> Array:
    name = CHECKPOINT_NAMES.get(module_name or "")
    return x if name is None else checkpoint_name(x, name)


def _dense_init(cfg: LlamaConfig, axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), axes)


class Attention(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x_btd, positions_bt, segment_ids_bt, layer_cache, cache_meta):
        cfg = self.cfg
        n, k, dt = cfg.n_heads, cfg.n_kv_heads, _dtype(cfg.dtype)

        q_btnh = Proj(cfg, n, "heads", name="q")(x_btd)
        k_btkh = Proj(cfg, k, "kv_heads", name="k")(x_btd)
        v_btkh = Proj(cfg, k, "kv_heads", name="v")(x_btd)
        q_btnh = apply_rope(q_btnh, positions_bt, cfg.rope_theta)
        k_btkh = apply_rope(k_btkh, positions_bt, cfg.rope_theta)
        q_btnh = nn.with_logical_constraint(q_btnh, ("batch", "length", "act_heads", "head_dim"))
        k_btkh = nn.with_logical_constraint(k_btkh, ("batch", "length", "act_kv_heads", "head_dim"))

        if layer_cache is None:
            blocks = SplashBlocks(
                cfg.splash_block_q,
                cfg.splash_block_kv,
                cfg.splash_block_kv_compute,
                cfg.splash_block_q_bwd,
                cfg.splash_block_kv_bwd,
            )
            out_btnh = attention(q_btnh, k_btkh, v_btkh, segment_ids_bt, segment_ids_bt, 0, cfg.attention, blocks)
            new_layer_cache = None
        else:
            index = cache_meta["index"]
            k_bskh = jax.lax.dynamic_update_slice_in_dim(
                layer_cache["k"], k_btkh.astype(layer_cache["k"].dtype), index, axis=1
            )
            v_bskh = jax.lax.dynamic_update_slice_in_dim(
                layer_cache["v"], v_btkh.astype(layer_cache["v"].dtype), index, axis=1
            )
            out_btnh = attention(
                q_btnh,
                k_bskh.astype(dt),
                v_bskh.astype(dt),
                segment_ids_bt,
                cache_meta["segment_ids"],
                index,
                cfg.attention,
            )
            new_layer_cache = {"k": k_bskh, "v": v_bskh}
        out_btnh = nn.with_logical_constraint(out_btnh, ("batch", "length", "act_heads", "head_dim"))
        return OutProj(cfg, name="o")(out_btnh), new_layer_cache


class Proj(nn.Module):
    """x [B,T,D] -> [B,T,heads,H] with kernel [D, heads, H]."""

    cfg: LlamaConfig
    heads: int
    axis_name: str

    @nn.compact
    def __call__(self, x_btd):
        cfg = self.cfg
        w = self.param(
            "kernel",
            _dense_init(cfg, ("embed", self.axis_name, "head_dim")),
            (cfg.d_model, self.heads, cfg.dim_per_head),
            _dtype(cfg.param_dtype),
        )
        return _tagged(self.name, jnp.einsum("btd,dnh->btnh", x_btd, w.astype(_dtype(cfg.dtype))))


class OutProj(nn.Module):
    """[B,T,N,H] -> [B,T,D] with kernel [N, H, D]."""

    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x_btnh):
        cfg = self.cfg
        w = self.param(
            "kernel",
            _dense_init(cfg, ("heads", "head_dim", "embed")),
            (cfg.n_heads, cfg.dim_per_head, cfg.d_model),
            _dtype(cfg.param_dtype),
        )
        return _tagged(self.name, jnp.einsum("btnh,nhd->btd", x_btnh, w.astype(_dtype(cfg.dtype))))


class Dense(nn.Module):
    """x [..., in] -> [..., out] with kernel [in, out] and logical axes `axes`."""

    features: int
    axes: tuple[str, str]
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x):
        w = self.param(
            "kernel", _dense_init(self.cfg, self.axes), (x.shape[-1], self.features), _dtype(self.cfg.param_dtype)
        )
        return _tagged(self.name, jnp.einsum("...i,io->...o", x, w.astype(_dtype(self.cfg.dtype))))


class MLP(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x_btd):
        cfg = self.cfg
        gate_btf = Dense(cfg.d_ff, ("embed", "mlp"), cfg, name="gate")(x_btd)
        up_btf = Dense(cfg.d_ff, ("embed", "mlp"), cfg, name="up")(x_btd)
        h_btf = nn.silu(gate_btf) * up_btf
        h_btf = nn.with_logical_constraint(h_btf, ("batch", "length", "act_mlp"))
        return Dense(cfg.d_model, ("mlp", "embed"), cfg, name="down")(h_btf)


class DecoderLayer(nn.Module):
    """Pre-norm block; the signature fits `nn.scan` (carry x, broadcast inputs, scanned cache)."""

    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x_btd, positions_bt, segment_ids_bt, cache_meta, layer_cache):
        cfg = self.cfg
        dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
        x_btd = nn.with_logical_constraint(x_btd, ("batch", "length", "act_embed"))
        h_btd = RMSNorm(cfg.norm_eps, dt, pdt, name="attn_norm")(x_btd)
        attn_btd, new_layer_cache = Attention(cfg, name="attn")(
            h_btd, positions_bt, segment_ids_bt, layer_cache, cache_meta
        )
        x_btd = x_btd + attn_btd.astype(x_btd.dtype)
        h_btd = RMSNorm(cfg.norm_eps, dt, pdt, name="mlp_norm")(x_btd)
        x_btd = x_btd + MLP(cfg, name="mlp")(h_btd).astype(x_btd.dtype)
        return x_btd, new_layer_cache


ATTN_PROJ_NAMES = ("query_proj", "key_proj", "value_proj")
LAYER_SAVE_NAMES = {
    "save_qkv_proj": ATTN_PROJ_NAMES,
    "save_dot_except_mlp": (*ATTN_PROJ_NAMES, "out_proj"),
    "minimal": (*ATTN_PROJ_NAMES, "out_proj", "mlp_gate", "mlp_up", "mlp_down"),
}


def _remat_policy(name: str):
    """jax checkpoint policy of a `remat:` name (docs/model.md); "none" never gets here."""
    cp = jax.checkpoint_policies
    if name in LAYER_SAVE_NAMES:
        return cp.save_only_these_names(*LAYER_SAVE_NAMES[name])
    if name == "minimal_offloaded":
        return cp.save_and_offload_only_these_names(
            names_which_can_be_saved=[],
            names_which_can_be_offloaded=list(LAYER_SAVE_NAMES["minimal"]),
            offload_src="device",
            offload_dst="pinned_host",
        )
    return {
        "full": cp.nothing_saveable,
        "dots": cp.checkpoint_dots,
        "dots_no_batch": cp.checkpoint_dots_with_no_batch_dims,
        "save_proj": cp.dots_with_no_batch_dims_saveable,
    }[name]


class Llama(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, tokens_bt, positions_bt=None, segment_ids_bt=None, cache=None, return_hidden=False):
        """Logits [B,T,V] fp32 (and the new cache when given one); `return_hidden`: the final-norm hidden
        states [B,T,D] instead of logits (no cache), for a loss that applies `head_logits` in chunks."""
        cfg = self.cfg
        dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
        b, t = tokens_bt.shape
        if positions_bt is None:
            start = 0 if cache is None else cache["index"]
            positions_bt = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
        if segment_ids_bt is None:
            segment_ids_bt = jnp.ones((b, t), jnp.int32)

        embed = nn.Embed(
            cfg.vocab_size,
            cfg.d_model,
            dtype=dt,
            param_dtype=pdt,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), ("vocab", "embed")),
            name="embed",
        )
        x_btd = embed(tokens_bt).astype(dt)

        layer_cls = DecoderLayer
        if cfg.remat != "none":
            layer_cls = nn.remat(layer_cls, policy=_remat_policy(cfg.remat), prevent_cse=False)
        stack = nn.scan(
            layer_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0),
            length=cfg.n_layers,
            unroll=cfg.scan_unroll,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, name="layers")

        if cache is None:
            cache_meta, layer_caches = None, None
        else:
            index = cache["index"]
            kv_seg_bs = jax.lax.dynamic_update_slice_in_dim(
                cache["segment_ids"], segment_ids_bt.astype(jnp.int32), index, axis=1
            )
            cache_meta = {"index": index, "segment_ids": kv_seg_bs}
            layer_caches = {"k": cache["k"], "v": cache["v"]}
        x_btd, new_layer_caches = stack(x_btd, positions_bt, segment_ids_bt, cache_meta, layer_caches)

        x_btd = RMSNorm(cfg.norm_eps, dt, pdt, name="final_norm")(x_btd)
        if return_hidden:
            if cache is not None:
                raise ValueError("return_hidden is for full-sequence calls, not with a KV cache")
            return x_btd
        if cfg.tie_embeddings:
            logits_btv = embed.attend(x_btd)
        else:
            logits_btv = Dense(cfg.vocab_size, ("embed", "vocab"), cfg, name="lm_head")(x_btd)
        logits_btv = nn.with_logical_constraint(logits_btv.astype(jnp.float32), ("batch", "length", "act_vocab"))
        if cache is None:
            return logits_btv
        new_cache = {
            "k": new_layer_caches["k"],
            "v": new_layer_caches["v"],
            "segment_ids": cache_meta["segment_ids"],
            "index": cache["index"] + t,
        }
        return logits_btv, new_cache


def head_logits(cfg: LlamaConfig, params, x_btd: Array) -> Array:
    """fp32 logits [..., V] from final-norm hidden states, computed as `Llama.__call__` computes them
    (tied: the embedding's `attend`; untied: the `lm_head` kernel), for any slice of positions."""
    dt = _dtype(cfg.dtype)
    if cfg.tie_embeddings:
        logits = jnp.dot(x_btd.astype(dt), params["embed"]["embedding"].astype(dt).T)
    else:
        logits = jnp.einsum("...i,io->...o", x_btd, params["lm_head"]["kernel"].astype(dt))
    return logits.astype(jnp.float32)


def init_cache(cfg: LlamaConfig, batch: int, max_len: int, dtype: Optional[str] = None) -> dict[str, Array]:
    """Preallocated KV cache: k/v [L, B, S, K, H], per-slot segment ids [B, S] (0 = empty), write index."""
    dt = _dtype(dtype or cfg.dtype)
    shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.dim_per_head)
    return {
        "k": jnp.zeros(shape, dt),
        "v": jnp.zeros(shape, dt),
        "segment_ids": jnp.zeros((batch, max_len), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
    }


def init_params(cfg: LlamaConfig, rng: Array, seq_len: int = 8):
    """Random parameters (unboxed, no partitioning metadata)."""
    model = Llama(cfg)
    variables = model.init(rng, jnp.zeros((1, seq_len), jnp.int32))
    return nn.unbox(variables["params"])
