"""`python -m spiritlm_jax.train [--config configs/X.yaml] [key=value | --key value ...]`: continued pretraining.

With no arguments it trains the tiny demo model on the embedded demo corpus on CPU in minutes.
Everything a run needs is in `TrainConfig` (spiritlm_jax/training/config.py; `--help` lists every
key); the run directory `out_dir` is a bundle: config.yaml, bundle.yaml, the tokenizer files, the
corpus' speech tokenizer, checkpoints/, metrics.jsonl and tensorboard/. Re-running the same command
resumes from the latest checkpoint (model, optimizer and data-iterator state), bit for bit.
"""

from __future__ import annotations

import sys

from spiritlm_jax import aot
from spiritlm_jax.config import run_cli
from spiritlm_jax.training.config import TrainConfig
from spiritlm_jax.training.loop import report_errors, run

PROG = "python -m spiritlm_jax.train"


def main(argv: list[str] | None = None) -> int:
    return run_cli(TrainConfig, argv, PROG, lambda cfg: report_errors(run, cfg), description=f"{__doc__}\n{aot.HELP}")


if __name__ == "__main__":
    sys.exit(main())
