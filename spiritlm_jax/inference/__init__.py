"""Inference: the SpiritLM generation API (`spiritlm`) and the paper's few-shot prompts (`fewshot`)."""

from spiritlm_jax.inference.spiritlm import (
    DEFAULT_SPEAKER,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    ContentType,
    GenerationConfig,
    GenerationInput,
    GenerationOutput,
    OutputModality,
    SpiritLM,
)

__all__ = [
    "DEFAULT_SPEAKER",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "ContentType",
    "GenerationConfig",
    "GenerationInput",
    "GenerationOutput",
    "OutputModality",
    "SpiritLM",
]
