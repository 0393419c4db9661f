"""AdamW with warm-up, constant/cosine schedules, clipping and a weight-decay mask (optax)."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    warmup_steps: int = 100
    schedule: Literal["constant", "cosine"] = "constant"
    decay_steps: int = 0  # cosine: steps from the end of warm-up to the floor; 0 = the run's length
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    decay_norms_and_embeddings: bool = False
    grad_clip: float = 1.0  # global-norm clipping; 0 disables
    grad_accum: int = 1  # micro-batches per optimizer step

    def __post_init__(self):
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("warmup_steps", "decay_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")
        for name in ("b1", "b2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def lr_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    warmup = optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1))
    if cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    else:
        decay = cfg.decay_steps or max(total_steps - cfg.warmup_steps, 1)
        after = optax.cosine_decay_schedule(cfg.lr, decay, alpha=cfg.min_lr_ratio)
    return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def _is_decayed(path) -> bool:
    """No decay for norm scales and the embedding table (when so configured)."""
    names = [getattr(k, "key", getattr(k, "name", "")) for k in path]
    return not any(str(n).endswith("norm") or n == "embed" for n in names)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    def mask(params):
        if cfg.decay_norms_and_embeddings:
            return jax.tree.map(lambda _: True, params)
        return jax.tree_util.tree_map_with_path(lambda p, _: _is_decayed(p), params)

    chain = []
    if cfg.grad_clip > 0:
        chain.append(optax.clip_by_global_norm(cfg.grad_clip))
    chain.append(
        optax.adamw(
            lr_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=mask
        )
    )
    return optax.chain(*chain)
