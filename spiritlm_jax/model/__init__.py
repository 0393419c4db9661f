"""The LLaMA-2 core: config, Flax modules, KV cache, sharding rules, vocabulary extension.

Loading a saved LM is the bundle's job: `spiritlm_jax.bundle.load_pretrained`."""

from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.llama import Llama, init_cache, init_params
from spiritlm_jax.model.vocab import extend_vocab

__all__ = ["LlamaConfig", "Llama", "init_cache", "init_params", "extend_vocab"]
