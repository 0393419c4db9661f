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
from spiritlm_jax.bundle.train_layout import quiet_orbax_errors
from spiritlm_jax.config import ConfigError, run_cli
from spiritlm_jax.locking import DirLocked
from spiritlm_jax.training.config import TrainConfig
from spiritlm_jax.training.loop import TrainingStopped, run

PROG = "python -m spiritlm_jax.train"


def _train(cfg: TrainConfig) -> int:
    try:
        with quiet_orbax_errors(permanent=True):  # a failed save is reported in one line
            run(cfg)
    except TrainingStopped as e:
        print(f"training stopped: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except DirLocked as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # writing the run directory failed (e.g. a full disk): one line
        where = f" ({e.filename})" if e.filename else ""
        print(f"training stopped: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(TrainConfig, argv, PROG, _train, description=f"{__doc__}\n{aot.HELP}")


if __name__ == "__main__":
    sys.exit(main())
