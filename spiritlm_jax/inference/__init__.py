"""Inference: the SpiritLM generation API (`spiritlm`) and the paper's few-shot prompts (`fewshot`)."""

from spiritlm_jax.inference.generation_config import resolve_generation_config
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
    Spiritlm,
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
    "Spiritlm",
    "resolve_generation_config",
]
