"""The evaluation commands: {task: (config schema, run function)}, shared by the CLI and suites."""

from __future__ import annotations

from spiritlm_jax.evaluation.fewshot import FewShotRunConfig, run_fewshot_command
from spiritlm_jax.evaluation.likelihood_run import LikelihoodRunConfig, run_likelihood
from spiritlm_jax.evaluation.stsp.run import StspRunConfig, run_stsp_command

TASKS = {
    "likelihood": (
        LikelihoodRunConfig,
        run_likelihood,
        "likelihood-pair accuracy (sWUGGY, sBLIMP, (Topic-)StoryCloze, ...)",
    ),
    "stsp": (StspRunConfig, run_stsp_command, "speech-text sentiment preservation (T2T, T2S, S2S, S2T)"),
    "fewshot": (FewShotRunConfig, run_fewshot_command, "few-shot ASR / TTS / intent classification"),
}
