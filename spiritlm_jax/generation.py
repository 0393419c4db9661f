"""Interleaved text/speech generation with the reference's interface (SPEC.md §5), in JAX.

    lm = SpiritLM.from_checkpoint("runs/demo")
    out = lm.generate([GenerationInput("[...]", ContentType.TEXT)], OutputModality.TEXT,
                      GenerationConfig(max_new_tokens=50))

Prompt building, modality forcing, output parsing, dropping short speech chunks and vocoding a
continued prompt together with its continuation follow the reference code. Differences, on purpose:
padding rows of the embedding (ids past the last real token) are never generated; batches of
prompts decode in one call (`generate_batch`); errors are ValueErrors that say what is wrong.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from typing import Any, Optional, Sequence, Union

import numpy as np

from spiritlm_jax.bundle import load_bundle
from spiritlm_jax.model.decode import SamplingConfig, generate_tokens

GenerationConfig = SamplingConfig  # temperature, top_k, top_p, repetition_penalty, do_sample, max_new_tokens

MIN_NEW_SPEECH_HUBERT = 25  # ARBITRARY mode drops new speech chunks shorter than this (reference)
_SPEECH_TOKEN = re.compile(r"\[(?:Hu|Pi|St)\d+\]")
_CHUNK = re.compile(r"(\[Text\]|\[Speech\])|((?:\[(?:Hu|Pi|St)\d+\])+)|([^\[]+|\[)")


class ContentType(enum.Enum):
    TEXT = "TEXT"
    SPEECH = "SPEECH"


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


def split_modalities(s: str) -> list[tuple[str, str]]:
    """'[Text]hi[Speech][Hu1][Hu2]' -> [('hi', 't'), ('[Hu1][Hu2]', 's')]; markers are dropped and
    neighbouring pieces of one modality merged."""
    chunks: list[tuple[str, str]] = []
    for marker, speech, text in _CHUNK.findall(s):
        if marker:
            continue
        piece, kind = (speech, "s") if speech else (text, "t")
        if chunks and chunks[-1][1] == kind:
            chunks[-1] = (chunks[-1][0] + piece, kind)
        else:
            chunks.append((piece, kind))
    return chunks


def ends_with_speech(s: str) -> bool:
    return bool(re.search(r"\[(?:Hu|Pi|St)\d+\]$", s))


def starts_with_speech(s: str) -> bool:
    return bool(re.match(r"\[(?:Hu|Pi|St)\d+\]", s))


def last_speech_start(s: str) -> int:
    """Index where the trailing run of speech tokens of `s` begins."""
    m = re.search(r"(?:\[(?:Hu|Pi|St)\d+\])+$", s)
    return m.start() if m else len(s)


def _count_hubert(s: str) -> int:
    return s.count("[Hu")


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
    def from_checkpoint(cls, path: str | os.PathLike, vocoder: Optional[str | os.PathLike] = None,
                        variant: Optional[str] = None, **numerics) -> "SpiritLM":
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

    def build_prompt(self, inputs: Sequence[Union[GenerationInput, tuple]], output_modality: OutputModality) -> str:
        if not inputs:
            raise ValueError("interleaved_inputs is empty: give at least one text or speech input")
        parts, prev = [], None
        for i, item in enumerate(inputs):
            item = item if isinstance(item, GenerationInput) else GenerationInput.from_tuple(item)
            if item.content_type == ContentType.SPEECH:
                units = self.encode_speech(item.content, f"input {i} (speech)")
                if prev != "s":
                    parts.append("[Speech]")
                parts.append(units)
                prev = "s"
            else:
                if not isinstance(item.content, str):
                    raise ValueError(f"input {i} (text): expected a string, got {type(item.content).__name__}")
                if prev != "t":
                    parts.append("[Text]")
                parts.append(item.content)
                prev = "t"
        if output_modality == OutputModality.TEXT and prev != "t":
            parts.append("[Text]")
        elif output_modality == OutputModality.SPEECH and prev != "s":
            parts.append("[Speech]")
        return "".join(parts)

    def allowed_tokens(self, output_modality: OutputModality, force: bool = True) -> np.ndarray:
        """Bool [V] of generable ids: the reference's bans, plus padding rows never generated."""
        lay, v = self.layout, self.model.cfg.vocab_size
        ids = np.arange(v)
        n_real = lay.style_offset + 100 if lay.expressive else lay.hubert_offset + 501
        real = ids < n_real
        if not force or output_modality == OutputModality.ARBITRARY:
            return real
        markers = (ids == lay.text_marker_id) | (ids == lay.speech_marker_id)
        speech = np.array([lay.is_speech_id(int(i)) for i in ids])
        if output_modality == OutputModality.TEXT:
            return real & ~markers & ~speech
        return real & ~markers & speech  # SPEECH: no text ids (EOS included, as the reference)

    # ----- generation ----------------------------------------------------------------------
    def generate(
        self,
        interleaved_inputs: Optional[Sequence[Union[GenerationInput, tuple]]] = None,
        output_modality: Union[OutputModality, str] = OutputModality.ARBITRARY,
        generation_config: GenerationConfig = GenerationConfig(),
        force_tokens_to_output_modality: bool = True,
        speaker_id: int = 2,
        return_prompt: bool = False,
        seed: Optional[int] = None,
        prompt: Optional[str] = None,
    ):
        """One prompt (inputs or a ready token string) -> list of GenerationOutput [, prompt]."""
        outs, prompts = self.generate_batch(
            [interleaved_inputs] if prompt is None else None, output_modality, generation_config,
            force_tokens_to_output_modality, speaker_id, seed, prompts=None if prompt is None else [prompt],
        )
        return (outs[0], prompts[0]) if return_prompt else outs[0]

    def generate_batch(
        self,
        batch_inputs: Optional[Sequence[Sequence[Union[GenerationInput, tuple]]]],
        output_modality: Union[OutputModality, str] = OutputModality.ARBITRARY,
        generation_config: GenerationConfig = GenerationConfig(),
        force_tokens_to_output_modality: bool = True,
        speaker_id: int = 2,
        seed: Optional[int] = None,
        prompts: Optional[Sequence[str]] = None,
    ):
        """Many prompts decoded together (left-padded). Returns (outputs per prompt, prompt strings)."""
        modality = OutputModality.parse(output_modality)
        if prompts is None:
            if not batch_inputs:
                raise ValueError("no prompts given")
            prompts = [self.build_prompt(inputs, modality) for inputs in batch_inputs]
        ids = [self.tokenizer.encode(p, bos=True, eos=False) for p in prompts]
        ctx = self.model.cfg.max_seq_len
        for i, p in enumerate(ids):
            if len(p) + generation_config.max_new_tokens > ctx:
                raise ValueError(
                    f"prompt {i} has {len(p)} tokens; with max_new_tokens={generation_config.max_new_tokens} it "
                    f"exceeds the model's context of {ctx} tokens (shorten the prompt or max_new_tokens)"
                )
        new = generate_tokens(
            self.model, self.params, ids, generation_config,
            eos_ids=[self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else [],
            logit_mask=self.allowed_tokens(modality, force_tokens_to_output_modality),
            seed=0 if seed is None else seed,
        )
        outs = []
        for prompt, toks in zip(prompts, new):
            toks = [t for t in toks if t != self.tokenizer.eos_id]
            outs.append(self._decode_output(modality, self.tokenizer.decode(toks).strip(), prompt, speaker_id))
        return outs, list(prompts)

    # ----- outputs -------------------------------------------------------------------------
    def _vocode(self, units: str, speaker_id: int) -> np.ndarray:
        if self.vocoder is None:
            raise ValueError("this checkpoint has no vocoder, so speech outputs cannot be turned into audio")
        return self.vocoder.vocode(units, speaker=speaker_id)

    def _decode_output(self, modality: OutputModality, gen: str, prompt: str, speaker_id: int) -> list[GenerationOutput]:
        if modality == OutputModality.TEXT:
            return [GenerationOutput(gen, ContentType.TEXT)]
        if modality == OutputModality.SPEECH:
            units = "".join(_SPEECH_TOKEN.findall(gen))
            return [GenerationOutput(self._vocode(units, speaker_id), ContentType.SPEECH)] if units else []
        continued = ends_with_speech(prompt) and starts_with_speech(gen)
        prompt_speech = prompt[last_speech_start(prompt):] if continued else ""
        outputs = []
        for i, (chunk, kind) in enumerate(split_modalities(gen)):
            if kind == "t":
                outputs.append(GenerationOutput(chunk, ContentType.TEXT))
                continue
            n_new = _count_hubert(chunk)
            if i == 0 and continued:
                # The prompt ends in speech and the output goes on in speech: vocode both together (the
                # continuation may lack pitch/style tokens of its own) and cut off the prompt's share.
                if n_new < MIN_NEW_SPEECH_HUBERT:
                    continue
                n_prompt = _count_hubert(prompt_speech)
                audio = self._vocode(prompt_speech + chunk, speaker_id)
                ratio = n_prompt / max(n_prompt + n_new, 1)
                outputs.append(GenerationOutput(audio[int(np.ceil(audio.size * ratio)):], ContentType.SPEECH))
            elif i > 0 and n_new < MIN_NEW_SPEECH_HUBERT:  # as the reference: a leading chunk is kept
                continue
            else:
                outputs.append(GenerationOutput(self._vocode(chunk, speaker_id), ContentType.SPEECH))
        return outputs
