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
import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from spiritlm_jax.bundle import load_bundle
from spiritlm_jax.model.decode import SamplingConfig, check_context_length, generate_tokens
from spiritlm_jax.speech.vocoder import DEFAULT_SPEAKER
from spiritlm_jax.tokens import (
    Modality,
    Prompt,
    Segment,
    build_prompt,
    count_hubert,
    encode_prompt,
    last_speech_start,
    split_ids,
    split_string,
)

GenerationConfig = SamplingConfig  # temperature, top_k, top_p, repetition_penalty, do_sample, max_new_tokens
DEFAULT_GENERATION = GenerationConfig()
DEFAULT_TEMPERATURE = 0.8  # the sampling of the CLIs and STSP (the paper's); GenerationConfig() itself samples plainly
DEFAULT_TOP_P = 0.95
MIN_NEW_SPEECH_HUBERT = 25  # ARBITRARY mode drops new speech chunks shorter than this (reference)
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
        **numerics,
    ) -> "SpiritLM":
        """Load an LM with what turns content into tokens and back: a thin call of
        `spiritlm_jax.bundle.load_bundle`.

        `path` is a bundle: a training run directory, a converted model directory (e.g. converted
        weights), or the root of a converted reference tree (tools/convert_weights/
        spiritlm_checkpoints.py), where `variant` ("base" / "expressive") picks the LM when it holds
        both. Its bundle.yaml says whether it is EXPRESSIVE and where its speech tokenizer and vocoder
        are; `vocoder` (a vocoder directory) replaces the bundle's.
        `numerics` override dtype/attention of the LM (e.g. dtype="float32")."""
        b = load_bundle(path, variant=variant, vocoder=vocoder, **numerics)
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

    def allowed_tokens(self, output_modality: OutputModality, force: bool = True) -> np.ndarray:
        """Bool [V] of generable ids: the reference's bans, plus padding rows never generated."""
        modality = OutputModality.parse(output_modality).modality if force else None
        return self.layout.allowed_ids(self.model.cfg.vocab_size, modality)

    # ----- generation ----------------------------------------------------------------------
    def generate(
        self,
        interleaved_inputs: Optional[Sequence[Union[GenerationInput, tuple]]] = None,
        output_modality: Union[OutputModality, str] = OutputModality.ARBITRARY,
        generation_config: GenerationConfig = DEFAULT_GENERATION,
        force_tokens_to_output_modality: bool = True,
        speaker_id: int = DEFAULT_SPEAKER,
        return_prompt: bool = False,
        seed: Optional[int] = None,
        prompt: Optional[str] = None,
    ):
        """One prompt (inputs or a ready token string) -> list of GenerationOutput [, prompt]."""
        outs, prompts = self.generate_batch(
            [interleaved_inputs] if prompt is None else None,
            output_modality,
            generation_config,
            force_tokens_to_output_modality,
            speaker_id,
            seed,
            prompts=None if prompt is None else [prompt],
        )
        return (outs[0], prompts[0]) if return_prompt else outs[0]

    def generate_batch(
        self,
        batch_inputs: Optional[Sequence[Sequence[Union[GenerationInput, tuple]]]],
        output_modality: Union[OutputModality, str] = OutputModality.ARBITRARY,
        generation_config: GenerationConfig = DEFAULT_GENERATION,
        force_tokens_to_output_modality: bool = True,
        speaker_id: int = DEFAULT_SPEAKER,
        seed: Optional[int] = None,
        prompts: Optional[Sequence[Union[str, Prompt]]] = None,
    ):
        """Many prompts decoded together (left-padded). `prompts`: ready prompt strings or Prompts
        instead of inputs. Returns (outputs per prompt, prompt strings)."""
        modality = OutputModality.parse(output_modality)
        if prompts is None:
            if not batch_inputs:
                raise ValueError("no prompts given")
            built = [self.prompt(inputs, modality) for inputs in batch_inputs]
        else:
            built = [p if isinstance(p, Prompt) else encode_prompt(self.tokenizer, p) for p in prompts]
        ctx = self.model.cfg.max_seq_len
        for i, p in enumerate(built):
            check_context_length(
                len(p.ids),
                generation_config.max_new_tokens,
                ctx,
                what=f"prompt {i}",
                new="new tokens (max_new_tokens; shorten the prompt or max_new_tokens)",
            )
        new = generate_tokens(
            self.model,
            self.params,
            [p.ids for p in built],
            generation_config,
            eos_ids=[self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else [],
            logit_mask=self.allowed_tokens(modality, force_tokens_to_output_modality),
            seed=0 if seed is None else seed,
        )
        outs = []
        for prompt, toks in zip(built, new):
            toks = [t for t in toks if t != self.tokenizer.eos_id]
            outs.append(self._decode_output(modality, toks, prompt.ids, speaker_id))
        return outs, [p.text for p in built]

    # ----- outputs -------------------------------------------------------------------------
    def _vocode(self, units: str, speaker_id: int) -> np.ndarray:
        if self.vocoder is None:
            raise ValueError("this checkpoint has no vocoder, so speech outputs cannot be turned into audio")
        return self.vocoder.vocode(units, speaker=speaker_id)

    def _as_ids(self, x) -> list[int]:
        return self.tokenizer.encode(x, bos=False) if isinstance(x, str) else [int(i) for i in x]

    def _decode_output(self, modality: OutputModality, gen, prompt, speaker_id: int) -> list[GenerationOutput]:
        """New ids `gen` after prompt ids `prompt` -> outputs (token strings are accepted and encoded)."""
        gen, prompt = self._as_ids(gen), self._as_ids(prompt)
        lay, tok = self.layout, self.tokenizer
        if modality == OutputModality.TEXT:
            return [GenerationOutput(tok.decode(gen).strip(), ContentType.TEXT)]
        if modality == OutputModality.SPEECH:
            units = tok.decode([i for i in gen if lay.is_speech_id(i)])
            return [GenerationOutput(self._vocode(units, speaker_id), ContentType.SPEECH)] if units else []
        chunks = self._chunks(gen)
        lead = next((i for i in gen if not (lay.is_text_id(i) and not tok.decode([i]).strip())), None)
        continued = bool(prompt) and lay.is_speech_id(prompt[-1]) and lead is not None and lay.is_speech_id(lead)
        prompt_speech = ""
        if continued:
            last = split_ids(prompt, lay)[-1]
            prompt_speech = tok.decode(prompt[last.start : last.end])
        outputs = []
        for i, (chunk, ids, kind) in enumerate(chunks):
            if kind is Modality.TEXT:
                outputs.append(GenerationOutput(chunk, ContentType.TEXT))
                continue
            n_new = count_hubert(ids, lay)
            if i == 0 and continued:
                # The prompt ends in speech and the output goes on in speech: vocode both together (the
                # continuation may lack pitch/style tokens of its own) and cut off the prompt's share.
                if n_new < MIN_NEW_SPEECH_HUBERT:
                    continue
                n_prompt = count_hubert(prompt[last.start : last.end], lay)
                audio = self._vocode(prompt_speech + chunk, speaker_id)
                ratio = n_prompt / max(n_prompt + n_new, 1)
                outputs.append(GenerationOutput(audio[int(np.ceil(audio.size * ratio)) :], ContentType.SPEECH))
            elif i > 0 and n_new < MIN_NEW_SPEECH_HUBERT:  # as the reference: a leading chunk is kept
                continue
            else:
                outputs.append(GenerationOutput(self._vocode(chunk, speaker_id), ContentType.SPEECH))
        return outputs

    def _chunks(self, gen: list[int]) -> list[tuple[str, list[int], Modality]]:
        """(string, ids, modality) per modality chunk of `gen`: markers dropped, neighbouring spans of one
        modality merged, the whole output stripped of leading/trailing whitespace (as the reference)."""
        chunks: list[tuple[str, list[int], Modality]] = []
        for span in split_ids(gen, self.layout):
            ids = gen[span.start : span.end]
            piece = self.tokenizer.decode(ids)
            if chunks and chunks[-1][2] is span.modality:
                chunks[-1] = (chunks[-1][0] + piece, chunks[-1][1] + ids, span.modality)
            else:
                chunks.append((piece, ids, span.modality))
        if chunks and chunks[0][2] is Modality.TEXT:
            chunks[0] = (chunks[0][0].lstrip(), *chunks[0][1:])
        if chunks and chunks[-1][2] is Modality.TEXT:
            chunks[-1] = (chunks[-1][0].rstrip(), *chunks[-1][1:])
        return [c for c in chunks if c[0]]
