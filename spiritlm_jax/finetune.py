"""`python -m spiritlm_jax.finetune base=RUN data.train=pairs.jsonl [key=value ...]`: teach a model a task.

Prompt -> response pairs (JSONL, data/pairs.py; `python -m spiritlm_jax.finetune_data` writes them
for ASR, TTS or continuation from a prepared corpus or a manifest), the loss on the response only.
`lora.rank=0` trains every weight; `lora.rank=R` trains LoRA adapters (qwix) and keeps the base frozen:
out_dir then holds only the adapters and names its base. Either way out_dir is a bundle:

    python -m spiritlm_jax.generate --checkpoint OUT_DIR --speech a.wav --output-modality text
    python -m spiritlm_jax.merge --src OUT_DIR --out MERGED     (a plain bundle, exportable to HF)

It is the LM trainer (training/loop.py) with another data source: the same run-directory rules
(resume, fresh, allow_changes), metrics, TensorBoard and mesh keys. docs/finetuning.md has recipes.
"""

from __future__ import annotations

import sys

from spiritlm_jax.config import run_cli
from spiritlm_jax.training.finetune import FinetuneConfig, run
from spiritlm_jax.training.loop import report_errors

PROG = "python -m spiritlm_jax.finetune"


def main(argv: list[str] | None = None) -> int:
    return run_cli(FinetuneConfig, argv, PROG, lambda cfg: report_errors(run, cfg), description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
