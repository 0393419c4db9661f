"""LlamaConfig: the shape and numerics of the LLaMA-2 core (the schema for `model:` in configs)."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

AttentionBackend = Literal["auto", "xla", "cudnn", "splash"]
SPLASH_BLOCK_KEYS = (
    "splash_block_q",
    "splash_block_kv",
    "splash_block_kv_compute",
    "splash_block_q_bwd",
    "splash_block_kv_bwd",
)
RematPolicy = Literal[
    "none",
    "full",
    "minimal",
    "save_qkv_proj",
    "save_dot_except_mlp",
    "minimal_offloaded",
    "dots",  # older names, kept: every matmul's output (attention scores too)
    "dots_no_batch",  # matmuls without batch dimensions (jax's checkpoint_dots_with_no_batch_dims)
    "save_proj",  # the same jax policy as dots_no_batch
]


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters of a LLaMA-2 style decoder.

    `param_dtype` is what the parameters are stored in (fp32 master weights by default), `dtype`
    what matmuls run in (bf16 by default); norms, softmax and logits are always computed in fp32.
    """

    vocab_size: int = 32768
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 32
    head_dim: Optional[int] = None  # default d_model // n_heads
    d_ff: int = 11008
    norm_eps: float = 1e-5
    rope_theta: float = 100000.0
    max_seq_len: int = 4096
    tie_embeddings: bool = False
    init_std: float = 0.02
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    attention: AttentionBackend = "xla"  # auto: splash on TPU, cudnn on GPU, xla on CPU (docs/model.md)
    splash_block_q: int = 512  # splash attention tiles (tokens, multiples of 128): forward query block
    splash_block_kv: int = 512  # forward key/value block
    splash_block_kv_compute: int = 512  # forward key/value compute block (divides splash_block_kv)
    splash_block_q_bwd: int = 512  # backward (dq and dkv kernels) query block
    splash_block_kv_bwd: int = 512  # backward key/value block
    remat: RematPolicy = "none"  # what a layer keeps for the backward pass: full (nothing) .. none (everything)
    loss_chunk: int = 0  # training loss: LM head + cross-entropy over this many positions at a time (0: all at once)
    scan_unroll: int = 1

    @property
    def dim_per_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads}); set head_dim")
        if self.dim_per_head % 2:
            raise ValueError(f"head dimension must be even for rotary embeddings, got {self.dim_per_head}")
        for name in SPLASH_BLOCK_KEYS:
            if getattr(self, name) <= 0 or getattr(self, name) % 128:
                raise ValueError(f"{name} must be a positive multiple of 128, got {getattr(self, name)}")
        if self.splash_block_kv % self.splash_block_kv_compute:
            raise ValueError(
                f"splash_block_kv ({self.splash_block_kv}) must be a multiple of splash_block_kv_compute "
                f"({self.splash_block_kv_compute})"
            )
        if self.loss_chunk < 0:
            raise ValueError(f"loss_chunk must be >= 0 (0: no chunking), got {self.loss_chunk}")
        if self.scan_unroll < 1:
            raise ValueError(f"scan_unroll must be >= 1, got {self.scan_unroll}")

    def replace(self, **kw) -> "LlamaConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        """Total parameter count (embedding and head counted separately unless tied)."""
        d, h = self.d_model, self.dim_per_head
        attn = d * h * (2 * self.n_heads + 2 * self.n_kv_heads)
        mlp = 3 * d * self.d_ff
        per_layer = attn + mlp + 2 * d
        emb = self.vocab_size * d
        return self.n_layers * per_layer + emb * (1 if self.tie_embeddings else 2) + d

    def matmul_params(self) -> int:
        """N in the 6N FLOP convention: every weight used in a matmul, the LM head included."""
        d, h = self.d_model, self.dim_per_head
        attn = d * h * (2 * self.n_heads + 2 * self.n_kv_heads)
        return self.n_layers * (attn + 3 * d * self.d_ff) + self.vocab_size * d
