"""The schema of a training run (`TrainConfig`): what `python -m spiritlm_jax.train` reads from YAML
and key=value overrides. The defaults are the tiny demo run (configs/tiny_demo.yaml holds the same
values; a test keeps them equal)."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from spiritlm_jax.aot import CompileConfig
from spiritlm_jax.data.pipeline import DataConfig
from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.training.optim import OptimConfig

TINY_MODEL = LlamaConfig(
    vocab_size=1024,
    d_model=128,
    n_layers=4,
    n_heads=4,
    n_kv_heads=2,
    d_ff=352,
    max_seq_len=256,
    rope_theta=100000.0,
    dtype="float32",
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # data-parallel axis size; -1 = every device not used by fsdp x tensor
    fsdp: int = 1  # fully-sharded data-parallel axis size (parameters and optimizer state sharded)
    tensor: int = 1  # tensor-parallel axis size


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Where the weights start. `checkpoint`: a converted model directory (tools/convert_weights);
    its architecture must match `model` except `vocab_size` (grown, see docs/reference.md) and `rope_theta`."""

    checkpoint: Optional[str] = None  # converted model directory to start from (None: random init)
    seed: int = 0  # random init / new vocabulary rows


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = 100  # save every N steps (and at the last step); >= 1
    keep: int = 3  # checkpoints kept; >= 1
    async_save: bool = True  # write checkpoints in the background
    resume: bool = True  # continue from the latest checkpoint of out_dir (false into an existing run: refused)
    fresh: bool = False  # delete this run's files in out_dir, start at step 0 (once: rerun without it to resume)
    allow_changes: bool = False  # resume although optimizer/data settings differ from the checkpoint's (recorded)

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"every must be >= 1 (save every N steps), got {self.every}")
        if self.keep < 1:
            raise ValueError(f"keep must be >= 1 (checkpoints kept), got {self.keep}")


def check_run_numbers(cfg) -> None:
    """The schedule fields every trainer config shares (steps, log_every, eval_every, eval_batches) and
    the batch/accumulation split: ValueError naming the key."""
    if cfg.steps < 1:
        raise ValueError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {cfg.log_every}")
    for name in ("eval_every", "eval_batches"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.data.batch_size % cfg.optim.grad_accum:
        raise ValueError(
            f"data.batch_size {cfg.data.batch_size} is not divisible by optim.grad_accum {cfg.optim.grad_accum}"
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: LlamaConfig = TINY_MODEL
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup_steps=30, schedule="cosine", weight_decay=0.01)
    mesh: MeshConfig = MeshConfig()
    init: InitConfig = InitConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    steps: int = 300  # optimizer steps of the run
    log_every: int = 10  # metrics every N steps
    eval_every: int = 100  # held-out loss every N steps (0: never)
    eval_batches: int = 4  # held-out batches per evaluation
    out_dir: str = "runs/demo"  # the run directory (a bundle: config, checkpoints, tokenizer, metrics)
    distributed: Literal["auto", "on", "off"] = "auto"  # multi-host set-up (see training/distributed.py)
    progress: bool = True  # progress bar on process 0
    compile: CompileConfig = CompileConfig()  # compile.topology set: compile the step for that TPU pod only (--help)

    def __post_init__(self):
        check_run_numbers(self)
        if self.data.seq_len > self.model.max_seq_len:
            raise ValueError(f"data.seq_len {self.data.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}")
