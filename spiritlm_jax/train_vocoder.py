"""`python -m spiritlm_jax.train_vocoder --data.corpus DIR | --data.manifest m.jsonl [--data.tokenizer mel:DIR]
[key=value ...]`: train a HiFi-GAN unit vocoder (CodeGenerator + duration predictor against MPD + MSD)
on recordings and their units: a prepared corpus' stored units, or those a manifest's speech tokenizer gives.

Everything a run needs is in `VocoderTrainConfig` (spiritlm_jax/vocoder_training/config.py; `--help`
lists every key). The run directory `out_dir` holds config.yaml, checkpoints/, vocoder/ (a vocoder
directory for `Vocoder.load` / `SpiritLM.from_checkpoint(..., vocoder=...)`), metrics.jsonl and
tensorboard/. Re-running the same command resumes from the latest checkpoint, exactly. Export to
the reference's generator.pt + config.json: tools/convert_weights/hifigan_to_pt.py.
"""

from __future__ import annotations

import sys

from spiritlm_jax import aot
from spiritlm_jax.config import ConfigError, run_cli
from spiritlm_jax.locking import DirLocked
from spiritlm_jax.vocoder_training.config import VocoderTrainConfig
from spiritlm_jax.vocoder_training.loop import VocoderTrainingStopped, run

PROG = "python -m spiritlm_jax.train_vocoder"


def _train(cfg: VocoderTrainConfig) -> int:
    try:
        run(cfg)
    except VocoderTrainingStopped as e:
        print(f"training stopped: {e}", file=sys.stderr)
        return 1
    except (ConfigError, DirLocked) as e:
        print(f"{'config error' if isinstance(e, ConfigError) else 'error'}: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(VocoderTrainConfig, argv, PROG, _train, description=f"{__doc__}\n{aot.HELP}")


if __name__ == "__main__":
    sys.exit(main())
