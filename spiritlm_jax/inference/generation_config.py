"""Generation options as the reference takes them: transformers `GenerationConfig` fields.

The reference's `generate(..., generation_config=None, **kwargs)` starts from a default transformers
`GenerationConfig()` (greedy unless `do_sample`, `top_k=50` when sampling, `max_length=20` counting the
prompt unless `max_new_tokens` is set) and overwrites fields from `kwargs`. Here the same fields have the
same defaults; a transformers `GenerationConfig` object is read by its attributes (the library never
imports transformers). Fields this decoder does not implement are accepted at their default values and
are an error otherwise; a name that is no generation-config field is an error naming it.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping, Optional, Sequence, Union

from spiritlm_jax.model.decode import SamplingConfig


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """The transformers GenerationConfig fields spiritlm_jax implements, with transformers' defaults."""

    max_length: int = 20  # prompt + new tokens (transformers' default); max_new_tokens wins when set
    max_new_tokens: Optional[int] = None
    do_sample: bool = False  # greedy unless True
    temperature: float = 1.0
    top_k: int = 50  # used when sampling; 0 = off
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    eos_token_id: Optional[Union[int, Sequence[int]]] = None  # None: the tokenizer's EOS

    def __post_init__(self):
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        self.sampling(1)  # range checks of the sampling knobs

    def new_tokens(self, prompt_len: int) -> int:
        """How many tokens transformers generates at most after a prompt of `prompt_len` tokens (at least
        one: transformers checks max_length after each step)."""
        if self.max_new_tokens is not None:
            return int(self.max_new_tokens)
        if prompt_len >= self.max_length:
            warnings.warn(
                f"the prompt has {prompt_len} tokens, max_length is {self.max_length}: one token is generated "
                "(as transformers); set max_new_tokens",
                stacklevel=3,
            )
        return max(int(self.max_length) - int(prompt_len), 1)

    def sampling(self, max_new_tokens: int) -> SamplingConfig:
        return SamplingConfig(
            do_sample=bool(self.do_sample),
            temperature=float(self.temperature),
            top_k=int(self.top_k or 0),
            top_p=float(self.top_p if self.top_p is not None else 1.0),
            repetition_penalty=float(self.repetition_penalty if self.repetition_penalty is not None else 1.0),
            max_new_tokens=int(max_new_tokens),
        )

    def eos_ids(self, default: Optional[int]) -> list[int]:
        if self.eos_token_id is None:
            return [] if default is None else [int(default)]
        ids = [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)
        return [int(i) for i in ids]


OURS = frozenset(f.name for f in dataclasses.fields(GenerationConfig))
# transformers GenerationConfig fields (4.46) that this decoder does not implement, with the values
# that mean "off": accepted at these values (or None), an error otherwise
NOT_IMPLEMENTED: Mapping[str, Any] = {
    "min_length": 0,
    "min_new_tokens": None,
    "early_stopping": False,
    "max_time": None,
    "stop_strings": None,
    "num_beams": 1,
    "num_beam_groups": 1,
    "penalty_alpha": None,
    "dola_layers": None,
    "use_cache": True,
    "cache_implementation": None,
    "cache_config": None,
    "return_legacy_cache": True,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "diversity_penalty": 0.0,
    "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "renormalize_logits": False,
    "constraints": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_decoder_ids": None,
    "sequence_bias": None,
    "token_healing": False,
    "guidance_scale": None,
    "low_memory": None,
    "watermarking_config": None,
    "num_return_sequences": 1,
    "output_attentions": False,
    "output_hidden_states": False,
    "output_scores": False,
    "output_logits": None,
    "return_dict_in_generate": False,
    "encoder_no_repeat_ngram_size": 0,
    "is_assistant": False,
    "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant",
    "assistant_confidence_threshold": 0.4,
    "prompt_lookup_num_tokens": None,
    "max_matching_ngram_size": None,
    "generation_kwargs": {},
    "assistant_early_exit": None,
}
IGNORED = frozenset({"pad_token_id", "bos_token_id", "decoder_start_token_id", "transformers_version"})


def _check_not_implemented(values: Mapping[str, Any], what: str) -> None:
    bad = {k: v for k, v in values.items() if k in NOT_IMPLEMENTED and v is not None and v != NOT_IMPLEMENTED[k]}
    if bad:
        listed = ", ".join(f"{k}={v!r}" for k, v in sorted(bad.items()))
        raise ValueError(f"{what}: spiritlm_jax does not implement the generation option(s) {listed}")


def resolve_generation_config(
    generation_config: Any = None, kwargs: Optional[Mapping[str, Any]] = None
) -> GenerationConfig:
    """The reference's `_overwrite_generation_config`: `generation_config` (None: the defaults; ours; or
    any object with transformers GenerationConfig attributes, e.g. transformers' own) with `kwargs`
    (generation-config fields) written over it."""
    if generation_config is None:
        base: dict[str, Any] = {}
    elif isinstance(generation_config, GenerationConfig):
        base = dataclasses.asdict(generation_config)
    elif isinstance(generation_config, SamplingConfig):
        base = dataclasses.asdict(generation_config)
    elif isinstance(generation_config, Mapping):
        base = dict(generation_config)
        unknown = sorted(set(base) - OURS - set(NOT_IMPLEMENTED) - IGNORED)
        if unknown:
            raise ValueError(f"generation_config: unknown generation-config field(s) {unknown}")
    else:  # a transformers GenerationConfig (or look-alike): read its attributes
        attrs = generation_config.to_dict() if hasattr(generation_config, "to_dict") else vars(generation_config)
        if not isinstance(attrs, Mapping):
            raise ValueError(f"generation_config: expected a GenerationConfig, got {type(generation_config).__name__}")
        base = {k: v for k, v in attrs.items() if not k.startswith("_")}
        _check_not_implemented(base, "generation_config")
        base = {k: v for k, v in base.items() if k in OURS}
    kwargs = dict(kwargs or {})
    unknown = sorted(k for k in kwargs if k not in OURS and k not in NOT_IMPLEMENTED and k not in IGNORED)
    if unknown:
        raise ValueError(
            f"unknown generation option(s) {unknown}: keyword arguments of generate are transformers "
            f"GenerationConfig fields (implemented: {sorted(OURS)})"
        )
    _check_not_implemented(kwargs, "generate")
    _check_not_implemented(base, "generation_config")
    values = {**{k: v for k, v in base.items() if k in OURS}, **{k: v for k, v in kwargs.items() if k in OURS}}
    # transformers 5 leaves unset fields at None: those mean the 4.46 defaults
    defaults = GenerationConfig()
    values = {
        k: (getattr(defaults, k) if v is None and k not in ("max_new_tokens", "eos_token_id") else v)
        for k, v in values.items()
    }
    return GenerationConfig(**values)
