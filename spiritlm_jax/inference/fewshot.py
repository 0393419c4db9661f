"""Few-shot prompts for ASR, TTS and intent classification in the paper's formats (docs/reference.md, paper App. B).

    ASR     [Speech]<units>[Text]<START Transcript> words <END>   x shots, then [Speech]<units>[Text]<START Transcript>
    TTS     [Text]words stop[Speech]<units><stop units>           x shots, then [Text]words stop[Speech]
    intent  [Speech]<units>[Text]A:<intent>                        x shots, then [Speech]<units>[Text]A:

Speech is given as a Spirit LM unit string ("[Hu3][Hu7]...") or as audio (a path, bytes or a 16 kHz
array), which `encode` (e.g. `SpiritLM.encode_speech`) turns into units. TTS marks the end of each
spoken example with the spoken word "stop" (units of a recording of it, when given), so the model
learns to end its speech the same way; `strip_end_word` removes it from a transcript before scoring.
The exact separators are fields of `FewShotFormat` (the paper prints the formats, not the bytes).
Parsers cut a text continuation at the end mark: `parse_transcript`, `parse_intent`.

Each format is a list of prompt segments (`asr_segments`, ...) for the one prompt builder
(`spiritlm_jax.tokens.build_prompt`, which the evaluation encodes); `asr_prompt` etc. render the string.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional, Sequence

from spiritlm_jax.tokens import Modality, Segment, check_text, is_unit_string, render_prompt

SpeechLike = Any  # a unit string, a path, bytes, or a 16 kHz float array


@dataclasses.dataclass(frozen=True)
class FewShotFormat:
    asr_start: str = "<START Transcript> "
    asr_end: str = " <END>"
    tts_end_word: str = "stop"
    intent_prefix: str = "A:"


DEFAULT_FORMAT = FewShotFormat()


def _as_units(speech: SpeechLike, encode: Optional[Callable[[Any], str]], what: str) -> str:
    if is_unit_string(speech):
        return speech
    if isinstance(speech, str) and speech.startswith("[") and "]" in speech:
        raise ValueError(f"{what}: {speech[:40]!r} is neither a unit string ([Hu..][Pi..][St..] only) nor a path")
    if encode is None:
        raise ValueError(f"{what}: audio given but no speech tokenizer (pass encode=...)")
    units = encode(speech)
    if not units:
        raise ValueError(f"{what}: the audio gave no speech units (too short or silent)")
    return units


def _check_text(text, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what}: expected a non-empty string, got {text!r}")
    return check_text(text, what).strip()


def _text(s: str) -> Segment:
    return Segment(Modality.TEXT, s)


def _speech(units: str) -> Segment:
    return Segment(Modality.SPEECH, units)


def asr_segments(
    shots: Sequence[tuple[SpeechLike, str]],
    query: SpeechLike,
    encode: Optional[Callable[[Any], str]] = None,
    fmt: FewShotFormat = DEFAULT_FORMAT,
) -> list[Segment]:
    """shots: (speech, transcript) pairs; query: speech. Continue in TEXT and `parse_transcript`."""
    segs = []
    for i, (speech, text) in enumerate(shots):
        segs += [
            _speech(_as_units(speech, encode, f"shot {i} speech")),
            _text(f"{fmt.asr_start}{_check_text(text, f'shot {i} transcript')}{fmt.asr_end}"),
        ]
    return segs + [_speech(_as_units(query, encode, "query speech")), _text(fmt.asr_start)]


def tts_segments(
    shots: Sequence[tuple[str, SpeechLike]],
    query: str,
    encode: Optional[Callable[[Any], str]] = None,
    stop_speech: Optional[SpeechLike] = None,
    fmt: FewShotFormat = DEFAULT_FORMAT,
) -> list[Segment]:
    """shots: (text, speech) pairs; query: text. Continue in SPEECH (the builder adds its marker).
    `stop_speech` (a recording of the end word, or its units) is appended to every example's speech."""
    stop = _as_units(stop_speech, encode, "stop speech") if stop_speech is not None else ""
    segs = []
    for i, (text, speech) in enumerate(shots):
        segs += [
            _text(f"{_check_text(text, f'shot {i} text')} {fmt.tts_end_word}"),
            _speech(_as_units(speech, encode, f"shot {i} speech") + stop),
        ]
    return segs + [_text(f"{_check_text(query, 'query text')} {fmt.tts_end_word}")]


def intent_segments(
    shots: Sequence[tuple[SpeechLike, str]],
    query: SpeechLike,
    encode: Optional[Callable[[Any], str]] = None,
    fmt: FewShotFormat = DEFAULT_FORMAT,
) -> list[Segment]:
    """shots: (speech, intent label) pairs; query: speech. Continue in TEXT and `parse_intent`."""
    segs = []
    for i, (speech, label) in enumerate(shots):
        label = _check_text(label, f"shot {i} intent")
        if any(c.isspace() for c in label):
            raise ValueError(f"shot {i} intent: labels are single tokens like 'alarm_set', got {label!r}")
        segs += [_speech(_as_units(speech, encode, f"shot {i} speech")), _text(f"{fmt.intent_prefix}{label}")]
    return segs + [_speech(_as_units(query, encode, "query speech")), _text(fmt.intent_prefix)]


def asr_prompt(shots, query, encode=None, fmt: FewShotFormat = DEFAULT_FORMAT) -> str:
    """The ASR prompt string (see `asr_segments`)."""
    return render_prompt(asr_segments(shots, query, encode, fmt), Modality.TEXT)


def tts_prompt(shots, query, encode=None, stop_speech=None, fmt: FewShotFormat = DEFAULT_FORMAT) -> str:
    """The TTS prompt string (see `tts_segments`)."""
    return render_prompt(tts_segments(shots, query, encode, stop_speech, fmt), Modality.SPEECH)


def intent_prompt(shots, query, encode=None, fmt: FewShotFormat = DEFAULT_FORMAT) -> str:
    """The intent prompt string (see `intent_segments`)."""
    return render_prompt(intent_segments(shots, query, encode, fmt), Modality.TEXT)


OUTPUT = {"asr": Modality.TEXT, "intent": Modality.TEXT, "tts": Modality.SPEECH}  # each task's output modality


def parse_transcript(generated: str, fmt: FewShotFormat = DEFAULT_FORMAT) -> str:
    """The transcript in a TEXT continuation of `asr_prompt`: up to the end mark (or a new start mark)."""
    end = fmt.asr_end.strip()
    cut = len(generated)
    for mark in (end, fmt.asr_start.strip()):
        if mark and mark in generated:
            cut = min(cut, generated.index(mark))
    return " ".join(generated[:cut].split())


def parse_intent(generated: str) -> str:
    """The label in a TEXT continuation of `intent_prompt`: its first whitespace-free word."""
    words = generated.split()
    return words[0] if words else ""


def strip_end_word(transcript: str, fmt: FewShotFormat = DEFAULT_FORMAT) -> str:
    """A transcript of generated TTS speech without the trailing end word ("... stop")."""
    words = transcript.split()
    end = fmt.tts_end_word.lower()
    while words and re.sub(r"\W", "", words[-1].lower()) == end:
        words.pop()
    return " ".join(words)
