"""spiritlm_jax: Spirit LM (text + speech in one token stream) in JAX/Flax.

The generation API is importable from the package root (loaded lazily, so `import spiritlm_jax`
stays cheap): `SpiritLM`, `GenerationInput`, `GenerationConfig`, `ContentType`, `OutputModality`.
"""

_GENERATION = ("SpiritLM", "GenerationInput", "GenerationOutput", "GenerationConfig", "ContentType", "OutputModality")
__all__ = list(_GENERATION)


def __getattr__(name):
    if name in _GENERATION:
        from spiritlm_jax import generation

        return getattr(generation, name)
    raise AttributeError(f"module 'spiritlm_jax' has no attribute {name!r}")
