"""Interleaved text/speech generation with the reference's interface (docs/reference.md), in JAX.

    lm = SpiritLM.from_checkpoint("runs/demo")
    out = lm.generate([GenerationInput("[...]", ContentType.TEXT)], OutputModality.TEXT,
                      GenerationConfig(max_new_tokens=50))

Prompt building (the one builder, `spiritlm_jax.tokens.prompt`), modality forcing, output parsing,
dropping short speech chunks and vocoding a continued prompt together with its continuation follow
the reference code. Prompts and outputs travel as ids with modality spans; strings are made only for
the caller (prompt strings, text outputs) and for the vocoder (unit strings). Differences, on purpose:
padding rows of the embedding (ids past the last real token) are never generated; batches of prompts
decode in one call (`generate_batch`); errors are ValueErrors that say what is wrong.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from spiritlm_jax.bundle import load_bundle
from spiritlm_jax.inference.generation_config import GenerationConfig, resolve_generation_config
from spiritlm_jax.model.decode import check_context_length, generate_tokens
from spiritlm_jax.speech.vocoder import DEFAULT_SPEAKER
from spiritlm_jax.tokens import Modality, Prompt, Segment, build_prompt, encode_prompt, split_string, unit_tokens
from spiritlm_jax.tokens.reference_output import (
    ends_with_speech_token,
    hubert_count_plus_one,
    last_speech_start,
    parse_chunks,
    starts_with_speech_token,
)

DEFAULT_TEMPERATURE = 0.8  # STSP's sampling (the reference's and the paper's)
DEFAULT_TOP_P = 0.95
MIN_NEW_SPEECH_HUBERT = 25  # ARBITRARY mode: a chunk with `hubert tokens + 1 < 25` is dropped (reference)
CHECKPOINTS_ENV = "SPIRITLM_CHECKPOINTS_DIR"
VARIANTS = {"spirit-lm-base-7b": "base", "spirit-lm-expressive-7b": "expressive"}
split_modalities = split_string  # '[Text]hi[Speech][Hu1]' -> [('hi', TEXT), ('[Hu1]', SPEECH)]
__all__ = [
    "ContentType",
    "DEFAULT_SPEAKER",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "GenerationConfig",
    "GenerationInput",
    "GenerationOutput",
    "OutputModality",
    "SpiritLM",
    "Spiritlm",
    "last_speech_start",
    "split_modalities",
]


class ContentType(enum.Enum):
    TEXT = "TEXT"
    SPEECH = "SPEECH"

    @property
    def modality(self) -> Modality:
        return Modality.TEXT if self is ContentType.TEXT else Modality.SPEECH


class OutputModality(enum.Enum):
    TEXT = "TEXT"
    SPEECH = "SPEECH"
    ARBITRARY = "ARBITRARY"

    @classmethod
    def parse(cls, value: Union["OutputModality", str]) -> "OutputModality":
        if isinstance(value, cls):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            raise ValueError(f"unknown output modality {value!r}; use text, speech or arbitrary") from None

    @property
    def modality(self) -> Optional[Modality]:
        """The modality the output is forced to; None for ARBITRARY."""
        return None if self is OutputModality.ARBITRARY else Modality(self.value.lower())


@dataclasses.dataclass
class GenerationInput:
    """Text content is a string; speech content is a path, bytes, or a 16 kHz float array."""

    content: Any
    content_type: ContentType

    @classmethod
    def from_tuple(cls, item) -> "GenerationInput":
        kind, content = item
        try:
            return cls(content, ContentType[str(kind).upper()])
        except KeyError:
            raise ValueError(f"content type must be TEXT or SPEECH, got {kind!r}") from None


@dataclasses.dataclass
class GenerationOutput:
    content: Union[str, np.ndarray]
    content_type: ContentType


GenerationOuput = GenerationOutput  # the reference's spelling, for ported scripts


class SpiritLM:
    """The LM plus what turns content into tokens and tokens back into content."""

    def __init__(self, model, params, tokenizer, speech_tokenizer=None, vocoder=None):
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.speech_tokenizer, self.vocoder = speech_tokenizer, vocoder
        self.layout = tokenizer.layout
        if model.cfg.vocab_size < self.layout.vocab_size:
            raise ValueError(
                f"the model has {model.cfg.vocab_size} embedding rows but the tokenizer layout needs "
                f"{self.layout.vocab_size}"
            )

    # ----- loading -------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        vocoder: Optional[str | os.PathLike] = None,
        variant: Optional[str] = None,
        base_style_prompts: bool = False,
        **numerics,
    ) -> "SpiritLM":
        """Load an LM with what turns content into tokens and back: a thin call of
        `spiritlm_jax.bundle.load_bundle`.

        `path` is a bundle: a training run directory, a converted model directory (e.g. converted
        weights), or the root of a converted reference tree (tools/convert_weights/
        spiritlm_checkpoints.py), where `variant` ("base" / "expressive") picks the LM when it holds
        both. Its bundle.yaml says whether it is EXPRESSIVE and where its speech tokenizer and vocoder
        are; `vocoder` (a vocoder directory) replaces the bundle's.
        An EXPRESSIVE model whose speech tokenizer lacks pitch or style is an error naming the component,
        unless `base_style_prompts=True` asks for HuBERT-only prompts.
        `numerics` override dtype/attention of the LM (e.g. dtype="float32")."""
        b = load_bundle(path, variant=variant, vocoder=vocoder, base_style_prompts=base_style_prompts, **numerics)
        return cls(b.model, b.params, b.tokenizer, speech_tokenizer=b.speech_tokenizer, vocoder=b.vocoder)

    # ----- prompts -------------------------------------------------------------------------
    def encode_speech(self, audio, what: str = "speech") -> str:
        """Audio (a path, bytes or a 16 kHz array) -> its Spirit LM unit string; errors name `what`."""
        if self.speech_tokenizer is None:
            raise ValueError("this checkpoint has no speech tokenizer, so speech inputs cannot be encoded")
        try:
            units = self.speech_tokenizer.encode_string(audio)
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"{what}: {e}") from e
        if not units:
            raise ValueError(f"{what}: the audio gave no speech units (too short or silent)")
        return units

    def segments(self, inputs: Sequence[Union[GenerationInput, tuple]]) -> list[Segment]:
        """Inputs -> prompt segments (speech inputs encoded to units, errors naming the input)."""
        if not inputs:
            raise ValueError("interleaved_inputs is empty: give at least one text or speech input")
        segments = []
        for i, item in enumerate(inputs):
            item = item if isinstance(item, GenerationInput) else GenerationInput.from_tuple(item)
            if item.content_type == ContentType.SPEECH:
                segments.append(Segment(Modality.SPEECH, self.encode_speech(item.content, f"input {i} (speech)")))
            else:
                if not isinstance(item.content, str):
                    raise ValueError(f"input {i} (text): expected a string, got {type(item.content).__name__}")
                segments.append(Segment(Modality.TEXT, item.content))
        return segments

    def prompt(
        self,
        inputs: Sequence[Union[GenerationInput, tuple]],
        output_modality: Union[OutputModality, str] = OutputModality.ARBITRARY,
    ) -> Prompt:
        """The reference's prompt of `inputs` (markers at modality changes, the output's marker last) as
        ids with modality spans."""
        return build_prompt(self.tokenizer, self.segments(inputs), OutputModality.parse(output_modality).modality)

    def build_prompt(self, inputs: Sequence[Union[GenerationInput, tuple]], output_modality: OutputModality) -> str:
        """The prompt string of `inputs` (what `generate(..., return_prompt=True)` returns)."""
        return self.prompt(inputs, output_modality).text

    def allowed_tokens(
        self, output_modality: OutputModality, force: bool = True, speech_stops_at_eos: bool = True
    ) -> np.ndarray:
        """Bool [V] of generable ids: the reference's bans, plus padding rows never generated. For SPEECH
        the reference bans every text id, but transformers exempts EOS from banned ids, so speech may end
        at EOS (`speech_stops_at_eos=False`: EOS banned too, speech runs to the length limit)."""
        modality = OutputModality.parse(output_modality).modality if force else None
        mask = self.layout.allowed_ids(self.model.cfg.vocab_size, modality)
        eos = self.tokenizer.eos_id
        if modality is Modality.SPEECH and speech_stops_at_eos and eos is not None:
            mask[eos] = True
        return mask

    # ----- generation ----------------------------------------------------------------------
    def generate(
        self,
        interleaved_inputs: Optional[Union[Sequence[Union[GenerationInput, tuple]], GenerationInput]] = None,
        prompt: Optional[str] = None,
        output_modality: Union[OutputModality, str] = OutputModality.ARBITRARY,
        generation_config: Any = None,
        force_tokens_to_output_modality: bool = True,
        speaker_id: int = DEFAULT_SPEAKER,
        return_prompt: bool = False,
        seed: Optional[int] = None,
        *,
        speech_stops_at_eos: bool = True,
        **kwargs,
    ):
        """The reference's `generate`, argument for argument: one prompt (inputs, or a ready token
        string `prompt`, which wins when both are given) -> list of GenerationOutput [, prompt string].

        `generation_config`: None (transformers' defaults: greedy, max_length 20), our GenerationConfig,
        or a transformers GenerationConfig (read by its attributes); `kwargs` are generation-config
        fields written over it (`max_new_tokens=50, do_sample=True, temperature=0.8`); anything else is a
        ValueError naming it. `speech_stops_at_eos` (ours): True, as the reference (transformers exempts
        EOS from its banned ids), SPEECH output ends at EOS; False bans EOS too, so speech runs to the
        length limit."""
        if prompt is None:
            if interleaved_inputs is None:
                raise ValueError("interleaved_inputs and prompt can not both be None")
            if not isinstance(interleaved_inputs, (list, tuple)) or (
                isinstance(interleaved_inputs, tuple)
                and len(interleaved_inputs) == 2
                and isinstance(interleaved_inputs[0], str)
            ):
                interleaved_inputs = [interleaved_inputs]
        elif interleaved_inputs:
            warnings.warn("When prompt is specified, interleaved_inputs will not be used.", stacklevel=2)
        outs, prompts = self.generate_batch(
            [interleaved_inputs] if prompt is None else None,
            output_modality,
            generation_config,
            force_tokens_to_output_modality,
            speaker_id,
            seed,
            prompts=None if prompt is None else [prompt],
            speech_stops_at_eos=speech_stops_at_eos,
            **kwargs,
        )
        return (outs[0], prompts[0]) if return_prompt else outs[0]

    def generate_batch(
        self,
        batch_inputs: Optional[Sequence[Sequence[Union[GenerationInput, tuple]]]],
        output_modality: Union[OutputModality, str] = OutputModality.ARBITRARY,
        generation_config: Any = None,
        force_tokens_to_output_modality: bool = True,
        speaker_id: int = DEFAULT_SPEAKER,
        seed: Optional[int] = None,
        prompts: Optional[Sequence[Union[str, Prompt]]] = None,
        speech_stops_at_eos: bool = True,
        **kwargs,
    ):
        """Many prompts decoded together (left-padded; each as alone). `prompts`: ready prompt strings
        or Prompts instead of inputs; generation options as `generate`. Returns (outputs per prompt,
        prompt strings)."""
        modality = OutputModality.parse(output_modality)
        gen = resolve_generation_config(generation_config, kwargs)
        if prompts is None:
            if not batch_inputs:
                raise ValueError("no prompts given")
            built = [self.prompt(inputs, modality) for inputs in batch_inputs]
        else:
            built = [p if isinstance(p, Prompt) else encode_prompt(self.tokenizer, p) for p in prompts]
        ctx = self.model.cfg.max_seq_len
        limits = [gen.new_tokens(len(p.ids)) for p in built]
        for i, (p, n) in enumerate(zip(built, limits)):
            check_context_length(
                len(p.ids),
                n,
                ctx,
                what=f"prompt {i}",
                new="new tokens (max_new_tokens / max_length; shorten the prompt or the limit)",
            )
        eos = gen.eos_ids(self.tokenizer.eos_id)
        mask = self.allowed_tokens(modality, force_tokens_to_output_modality, speech_stops_at_eos)
        if speech_stops_at_eos and modality is OutputModality.SPEECH and force_tokens_to_output_modality:
            mask[[i for i in eos if 0 <= i < mask.size]] = True  # transformers exempts every EOS id from bans
        new = generate_tokens(
            self.model,
            self.params,
            [p.ids for p in built],
            gen.sampling(max(limits)),
            eos_ids=eos,
            logit_mask=mask,
            seed=0 if seed is None else seed,
        )
        outs = []
        for prompt, toks, n in zip(built, new, limits):
            outs.append(self._decode_output(modality, toks[:n], prompt, speaker_id))
        return outs, [p.text for p in built]

    # ----- outputs -------------------------------------------------------------------------
    def _vocode(self, units: str, speaker_id: int) -> np.ndarray:
        if self.vocoder is None:
            raise ValueError("this checkpoint has no vocoder, so speech outputs cannot be turned into audio")
        return self.vocoder.vocode(units, speaker=speaker_id)

    def continuation_string(self, prompt: Union[str, Prompt], new_ids: Sequence[int]) -> tuple[str, str]:
        """(the decoded prompt + continuation, the continuation as the reference reads it): the
        reference decodes prompt ids + new ids with its tokenizer and slices off len(prompt) characters,
        then strips. Where that slicing would cut into the continuation (the decoded prompt is not the
        prompt string: added-token layouts, a prompt that starts with whitespace), the new ids are
        decoded alone instead."""
        p = prompt if isinstance(prompt, Prompt) else encode_prompt(self.tokenizer, prompt)
        new_ids = [int(i) for i in new_ids]
        full = self.tokenizer.reference_decode(p.ids + new_ids)
        if full.startswith(p.text):
            return full, full[len(p.text) :].strip()
        tail = self.tokenizer.decode(new_ids)
        return p.text + tail, tail.strip()

    def _decode_output(self, modality: OutputModality, gen, prompt, speaker_id: int) -> list[GenerationOutput]:
        """New ids `gen` after `prompt` (a prompt string or Prompt) -> outputs, read as the reference reads
        them (docs/generation.md): the continuation string; TEXT as it is; SPEECH vocoded; ARBITRARY split
        into chunks, new speech chunks with `count + 1 < 25` HuBERT tokens dropped, a continued prompt
        vocoded with its continuation and its share `n_prompt / (n + 1)` cut off."""
        p = prompt if isinstance(prompt, Prompt) else encode_prompt(self.tokenizer, prompt)
        if isinstance(gen, str):  # a continuation string (tests, replays): its ids after the prompt's
            ids = self.tokenizer.encode(p.text + gen)
            gen = ids[len(p.ids) :] if ids[: len(p.ids)] == p.ids else self.tokenizer.encode_after_marker(gen)
        full, new = self.continuation_string(p, gen)
        if modality == OutputModality.TEXT:
            return [GenerationOutput(new, ContentType.TEXT)]
        if modality == OutputModality.SPEECH:
            units = unit_tokens(new)
            return [GenerationOutput(self._vocode(units, speaker_id), ContentType.SPEECH)] if units else []
        text = p.text
        continued = ends_with_speech_token(text) and starts_with_speech_token(new)
        if continued:
            start = last_speech_start(text)
            new = full[start:]  # the prompt's last speech run and the continuation, vocoded together
        outputs = []
        for i, (chunk, kind) in enumerate(parse_chunks(new)):
            if kind is Modality.TEXT:
                outputs.append(GenerationOutput(chunk, ContentType.TEXT))
                continue
            n_content = hubert_count_plus_one(chunk)
            if i == 0 and continued:
                n_prompt = hubert_count_plus_one(text[start:]) - 1
                if n_content - n_prompt < MIN_NEW_SPEECH_HUBERT:  # the continued speech is too short
                    continue
                audio = self._vocode(unit_tokens(chunk), speaker_id)
                outputs.append(
                    GenerationOutput(audio[math.ceil(audio.size * n_prompt / n_content) :], ContentType.SPEECH)
                )
            elif i > 0 and n_content < MIN_NEW_SPEECH_HUBERT:  # new speech in the output is too short
                continue
            else:
                outputs.append(GenerationOutput(self._vocode(unit_tokens(chunk), speaker_id), ContentType.SPEECH))
        return outputs


def Spiritlm(name: str | os.PathLike, **kwargs) -> SpiritLM:  # noqa: N802  the reference's entry point
    """The reference's `Spiritlm(name)`: "spirit-lm-base-7b" / "spirit-lm-expressive-7b" found in the
    converted tree at $SPIRITLM_CHECKPOINTS_DIR (tools/convert_weights/spiritlm_checkpoints.py, or an
    export's tree), or a path to a bundle; `kwargs` go to `SpiritLM.from_checkpoint`."""
    path = Path(name)
    if path.exists():
        return SpiritLM.from_checkpoint(path, **kwargs)
    if str(name) not in VARIANTS:
        raise ValueError(f"unknown model name {str(name)!r}: expected one of {sorted(VARIANTS)} or a path")
    root = os.environ.get(CHECKPOINTS_ENV)
    if not root:
        raise ValueError(
            f"{name}: set {CHECKPOINTS_ENV} to a converted checkpoint tree "
            "(tools/convert_weights/spiritlm_checkpoints.py) or pass a path"
        )
    root = Path(root)
    for d in (root / str(name), root / "spiritlm_model" / str(name)):
        if (d / "bundle.yaml").is_file():
            return SpiritLM.from_checkpoint(d, **kwargs)
    return SpiritLM.from_checkpoint(root, variant=VARIANTS[str(name)], **kwargs)
