"""`python -m spiritlm_jax.train [--config configs/X.yaml] [key=value ...]`: continued pretraining.

With no arguments it trains the tiny demo model on the embedded demo corpus on CPU in minutes.
Everything a run needs is in `TrainConfig`; the run directory `out_dir` receives config.yaml,
checkpoints/, metrics.jsonl and tensorboard/. Re-running the same command resumes from the latest
checkpoint (model, optimizer and data-iterator state), bit for bit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Literal, Optional

from spiritlm_jax.config import ConfigError, load_config
from spiritlm_jax.data.pipeline import DataConfig
from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.training.optim import OptimConfig

# The defaults are the tiny demo run (configs/tiny_demo.yaml holds the same values; a test keeps them equal).
TINY_MODEL = LlamaConfig(vocab_size=1024, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=352,
                         max_seq_len=256, rope_theta=100000.0, dtype="float32")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Where the weights start. `checkpoint`: a converted model directory (tools/convert_weights);
    its architecture must match `model` except `vocab_size` (grown, SPEC §2) and `rope_theta`."""

    checkpoint: Optional[str] = None
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = 100
    keep: int = 3
    async_save: bool = True
    resume: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: LlamaConfig = TINY_MODEL
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup_steps=30, schedule="cosine", weight_decay=0.01)
    mesh: MeshConfig = MeshConfig()
    init: InitConfig = InitConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    steps: int = 300
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    out_dir: str = "runs/demo"
    distributed: Literal["auto", "on", "off"] = "auto"
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.data.seq_len > self.model.max_seq_len:
            raise ValueError(f"data.seq_len {self.data.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}")
        if self.data.batch_size % self.optim.grad_accum:
            raise ValueError(
                f"data.batch_size {self.data.batch_size} is not divisible by optim.grad_accum {self.optim.grad_accum}"
            )


def maybe_initialize_distributed(mode: str) -> None:
    """Multi-host set-up: explicit env vars (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID),
    or jax's own cluster detection (TPU pods, SLURM, Open MPI) when mode is "on" or a cluster is seen."""
    import jax

    if mode == "off":
        return
    env = os.environ
    if "JAX_COORDINATOR_ADDRESS" in env and "JAX_NUM_PROCESSES" in env:
        if env.get("JAX_PLATFORMS", "") == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
        return
    in_cluster = (
        len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
        or int(env.get("SLURM_NTASKS", "1")) > 1
        or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    )
    if mode == "on" or in_cluster:
        jax.distributed.initialize()


def parse_args(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python -m spiritlm_jax.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML file (default: the built-in tiny demo run)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, nested with dots (optim.lr=1e-4)")
    args = parser.parse_args(argv)
    return load_config(TrainConfig, args.config, args.overrides)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from spiritlm_jax.training.loop import TrainingStopped, run

    try:
        run(cfg)
    except TrainingStopped as e:
        print(f"training stopped: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
