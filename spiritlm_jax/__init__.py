"""spiritlm_jax: Spirit LM (text + speech in one token stream) in JAX/Flax.

The generation API is importable from the package root (loaded lazily from `spiritlm_jax.inference`,
so `import spiritlm_jax` stays cheap): `SpiritLM`, `Spiritlm` (the reference's entry point),
`GenerationInput`, `GenerationConfig`, `ContentType`, `OutputModality`.
"""

import importlib

_GENERATION = (
    "SpiritLM",
    "Spiritlm",
    "GenerationInput",
    "GenerationOutput",
    "GenerationConfig",
    "ContentType",
    "OutputModality",
)
__all__ = list(_GENERATION)


def __getattr__(name):
    if name in _GENERATION:
        return getattr(importlib.import_module("spiritlm_jax.inference"), name)
    raise AttributeError(f"module 'spiritlm_jax' has no attribute {name!r}")
