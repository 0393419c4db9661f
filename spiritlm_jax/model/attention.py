"""The one attention entry point, with backends.

Masking is defined once, by `attention_mask`: a query attends to a key iff the key's slot index is
not after the query's (causal, in cache/sequence slot coordinates) and both carry the same segment
id. Segment id 0 marks padding; padding only sees padding, so no row is ever fully masked (no NaN).
Packed documents get distinct segment ids and therefore never see each other, on every backend.

Backends: `xla` (materialised scores, any device), `cudnn` (jax.nn.dot_product_attention's cuDNN
kernel, GPU; the full mask goes in as an additive bias), `splash` (jax's Pallas TPU splash-attention
kernel: causal block skipping plus segment ids, run in interpret mode on CPU for tests), and `auto`
(splash on TPU, cudnn on GPU, xla on CPU; resolved for the platform of the active mesh).
Splash serves full-sequence self-attention (training, scoring, prefill without a cache); calls with
a KV cache (decoding) take the xla path.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa
from jax.sharding import PartitionSpec as P

from spiritlm_jax.model.sharding import LOGICAL_RULES

BACKENDS = ("auto", "xla", "cudnn", "splash")
SPLASH_LANES = 128  # the kernel's KV compute block must be a multiple of the TPU lane width


class SplashBlocks(NamedTuple):
    """Splash tile sizes (tokens): forward q / kv / kv compute, backward q / kv (dq and dkv kernels)."""

    q: int = 512
    kv: int = 512
    kv_compute: int = 512
    q_bwd: int = 512
    kv_bwd: int = 512


def attention_mask(q_segment_ids_bt, kv_segment_ids_bs, q_offset=0):
    """Boolean mask [B, T, S]: causal over slots (query t sits at slot q_offset + t) and same segment."""
    t = q_segment_ids_bt.shape[1]
    s = kv_segment_ids_bs.shape[1]
    q_slot_t = q_offset + jnp.arange(t, dtype=jnp.int32)
    causal_ts = q_slot_t[:, None] >= jnp.arange(s, dtype=jnp.int32)[None, :]
    same_bts = q_segment_ids_bt[:, :, None] == kv_segment_ids_bs[:, None, :]
    return causal_ts[None] & same_bts


def target_platform() -> str:
    """Platform the computation is built for: the active mesh's devices (a TPU topology compiled from
    a CPU host counts as tpu), else jax's default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else mesh.abstract_device
    if device is not None and device.platform:
        platform = device.platform
    else:
        platform = jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform


def resolve_backend(backend: str, platform: Optional[str] = None) -> str:
    """`auto` -> splash on TPU, cudnn on GPU, xla elsewhere; other names are returned as they are."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    platform = platform or target_platform()
    return {"tpu": "splash", "gpu": "cudnn"}.get(platform, "xla")


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
    # The full boolean mask is passed explicitly (jax turns it into an additive bias for cuDNN), so
    # segment ids are honoured; never a bare is_causal, which would let packed documents see each other.
    out = jax.nn.dot_product_attention(
        q_btnh, k_bskh, v_bskh, mask=mask_bts[:, None], scale=scale, implementation="cudnn"
    )
    return out.astype(q_btnh.dtype)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def splash_padded_length(t: int, blocks: SplashBlocks) -> tuple[int, SplashBlocks]:
    """(padded length, effective blocks) for a sequence of t tokens: blocks larger than the (lane-rounded)
    sequence shrink to it, and the sequence is padded to a multiple of every block."""
    for name, b in blocks._asdict().items():
        if b <= 0 or b % SPLASH_LANES:
            raise ValueError(f"splash block size {name}={b} must be a positive multiple of {SPLASH_LANES}")
    cap = _round_up(t, SPLASH_LANES)
    eff = SplashBlocks(*(min(b, cap) for b in blocks))
    return _round_up(t, math.lcm(*eff)), eff


def _splash_kernel(n_heads: int, t: int, blocks: SplashBlocks, interpret: bool):
    mask = sa.MultiHeadMask([sa.CausalMask((t, t)) for _ in range(n_heads)])
    sizes = sa.BlockSizes(
        block_q=blocks.q,
        block_kv=blocks.kv,
        block_kv_compute=blocks.kv_compute,
        block_q_dkv=blocks.q_bwd,
        block_kv_dkv=blocks.kv_bwd,
        block_kv_dkv_compute=blocks.kv_bwd,
        block_q_dq=blocks.q_bwd,
        block_kv_dq=blocks.kv_bwd,
    )
    return sa.make_splash_mha(
        mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, residual_checkpoint_name="context", interpret=interpret
    )


def _splash_local(q_bnth, k_bkth, v_bkth, seg_bt, blocks: SplashBlocks, interpret: bool):
    """Splash on one shard: the kernel handles one row, vmapped over the batch."""
    kernel = _splash_kernel(q_bnth.shape[1], q_bnth.shape[2], blocks, interpret)
    return jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=sa.SegmentIds(s, s)))(q_bnth, k_bkth, v_bkth, seg_bt)


def _mesh_split(mesh, axes: tuple[str, ...], dim: int) -> tuple[str, ...]:
    """The mesh axes (of `axes`, size > 1) that split `dim`, or () when they cannot split it evenly."""
    axes = tuple(a for a in axes if a in mesh.axis_names and mesh.shape[a] > 1)
    return axes if axes and dim % math.prod(mesh.shape[a] for a in axes) == 0 else ()


def _splash_attention(q_btnh, k_bskh, v_bskh, seg_bt, scale, blocks: SplashBlocks, platform: str):
    """Causal self-attention with segment ids on the splash kernel, sharded with shard_map under a mesh:
    batch over the mesh axes the `batch` rule names, heads over `tensor` (kv heads repeated when the
    tensor axis does not divide them)."""
    if platform == "gpu":
        raise ValueError("attention backend 'splash' is the TPU kernel; on GPU use 'cudnn' (or 'auto')")
    b, t, n, h = q_btnh.shape
    t_pad, eff = splash_padded_length(t, blocks)
    q_bnth = jnp.transpose(q_btnh * jnp.asarray(scale, q_btnh.dtype), (0, 2, 1, 3))
    k_bkth = jnp.transpose(k_bskh, (0, 2, 1, 3))
    v_bkth = jnp.transpose(v_bskh, (0, 2, 1, 3))
    seg_bt = seg_bt.astype(jnp.int32)
    if t_pad != t:
        # Padded slots sit after every real token, so causality hides them from real queries; their
        # own outputs (segment 0) are cut off below.
        pad4 = ((0, 0), (0, 0), (0, t_pad - t), (0, 0))
        q_bnth, k_bkth, v_bkth = (jnp.pad(x, pad4) for x in (q_bnth, k_bkth, v_bkth))
        seg_bt = jnp.pad(seg_bt, ((0, 0), (0, t_pad - t)))
    local = functools.partial(_splash_local, blocks=eff, interpret=platform != "tpu")

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        out_bnth = local(q_bnth, k_bkth, v_bkth, seg_bt)
    else:
        rules = dict(LOGICAL_RULES)
        batch_rule = rules["batch"]
        batch_axes = _mesh_split(mesh, (batch_rule,) if isinstance(batch_rule, str) else tuple(batch_rule), b)
        head_axes = _mesh_split(mesh, (rules["act_heads"],), n)
        if head_axes and not _mesh_split(mesh, head_axes, k_bkth.shape[1]):
            k_bkth = jnp.repeat(k_bkth, n // k_bkth.shape[1], axis=1)
            v_bkth = jnp.repeat(v_bkth, n // v_bkth.shape[1], axis=1)
        bspec = batch_axes or None
        hspec = head_axes or None
        qkv_spec = P(bspec, hspec, None, None)
        out_bnth = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(qkv_spec, qkv_spec, qkv_spec, P(bspec, None)),
            out_specs=qkv_spec,
            check_vma=False,
        )(q_bnth, k_bkth, v_bkth, seg_bt)
    return jnp.transpose(out_bnth[:, :, :t], (0, 2, 1, 3)).astype(q_btnh.dtype)


def attention(
    q_btnh,
    k_bskh,
    v_bskh,
    q_segment_ids_bt,
    kv_segment_ids_bs,
    q_offset=0,
    backend="xla",
    splash_blocks: Optional[SplashBlocks] = None,
):
    """Grouped-query attention. q: [B,T,N,H]; k, v: [B,S,K,H] with N % K == 0. Returns [B,T,N,H].

    `q_offset` is the slot of the first query among the keys (0 for a full sequence, the cache write
    index when decoding). `splash_blocks` are the splash kernel's tile sizes (defaults: SplashBlocks()).
    """
    if q_btnh.shape[2] % k_bskh.shape[2]:
        raise ValueError(f"query heads {q_btnh.shape[2]} not a multiple of kv heads {k_bskh.shape[2]}")
    scale = q_btnh.shape[-1] ** -0.5
    platform = target_platform()
    backend = resolve_backend(backend, platform)
    if backend == "splash":
        self_attention = isinstance(q_offset, int) and q_offset == 0 and q_btnh.shape[1] == k_bskh.shape[1]
        if self_attention:
            return _splash_attention(
                q_btnh, k_bskh, v_bskh, q_segment_ids_bt, scale, splash_blocks or SplashBlocks(), platform
            )
        backend = "xla"  # decoding against a KV cache
    mask_bts = attention_mask(q_segment_ids_bt, kv_segment_ids_bs, q_offset)
    if backend == "xla":
        return _xla_attention(q_btnh, k_bskh, v_bskh, mask_bts, scale)
    if platform != "gpu":
        raise ValueError(f"attention backend 'cudnn' needs a GPU; this process runs on {platform}")
    return _cudnn_attention(q_btnh, k_bskh, v_bskh, mask_bts, scale)
