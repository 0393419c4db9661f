"""STSP prompts, as segments for the one prompt builder (`spiritlm_jax.tokens.build_prompt`).

0-shot: the reference's prompt (the input, then the output's marker, by the builder's rule). k-shot:
balanced examples in the template "[Text]p[Speech]g\\n..." (every part opens with its marker, examples
end with a newline glued on without a marker), then the query in the same template and the output's
marker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from spiritlm_jax.evaluation.stsp.manifest import DIRECTIONS, SENTIMENTS, StspItem
from spiritlm_jax.inference import ContentType, GenerationInput
from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.tokens import Modality, Prompt, Segment, build_prompt, render_prompt

NEWLINE = Segment(Modality.TEXT, "\n", marker=False)  # between (and after) few-shot examples


def _segment(lm, content: str, modality: str, half: Optional[str], data_root: Optional[Path], what: str) -> Segment:
    """One prompt/generation part with its marker (relative wav paths are under `data_root`; None: the
    path is used as it is)."""
    if modality == "text":
        return Segment(Modality.TEXT, content, marker=True)
    path = Path(content) if data_root is None or Path(content).is_absolute() else data_root / content
    try:
        wav = load_audio(path)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"{what}: {e}") from e
    if half == "first":
        wav = wav[: len(wav) // 2]
    elif half == "second":
        wav = wav[len(wav) // 2 :]
    return Segment(Modality.SPEECH, lm.encode_speech(wav, what), marker=True)


def fewshot_segments(
    lm, pool: Sequence[dict], direction: str, shots: int, seed: int, data_root: Path
) -> tuple[list[Segment], list]:
    """The balanced k-shot prefix (k/3 examples per sentiment, shuffled) and where each example is from."""
    if shots == 0:
        return [], []
    if shots < 0 or shots % 3:
        raise ValueError(
            f"few-shot prompts are balanced over 3 sentiments: shots must be 0 or a multiple of 3, got {shots}"
        )
    rng = np.random.default_rng(seed)
    chosen = []
    for s in SENTIMENTS:
        cands = [e for e in pool if e["sentiment"] == s]
        if len(cands) < shots // 3:
            src = pool[0]["where"].rsplit(":", 1)[0] if pool else "the few-shot pool"
            raise ValueError(f"{src}: {len(cands)} {s} example(s); {shots}-shot prompts need {shots // 3}")
        chosen += [cands[int(i)] for i in rng.choice(len(cands), shots // 3, replace=False)]
    chosen = [chosen[int(i)] for i in rng.permutation(len(chosen))]
    in_mod, out_mod = DIRECTIONS[direction]
    segments: list[Segment] = []
    for e in chosen:
        segments += [
            _segment(lm, e["prompt"], in_mod, "first", data_root, f"few-shot example {e['where']} (prompt)"),
            _segment(lm, e["generation"], out_mod, "second", data_root, f"few-shot example {e['where']} (generation)"),
            NEWLINE,
        ]
    return segments, [e["where"] for e in chosen]


def fewshot_prefix(
    lm, pool: Sequence[dict], direction: str, shots: int, seed: int, data_root: Path
) -> tuple[str, list]:
    """The k-shot prefix as a string (see `fewshot_segments`)."""
    segments, used = fewshot_segments(lm, pool, direction, shots, seed, data_root)
    return render_prompt(segments), used


def query_segments(lm, item: StspItem, direction: str, prefix: Sequence[Segment] = ()) -> list[Segment]:
    """0-shot: the reference's prompt (the input; the builder adds the output marker); k-shot: the prefix,
    the query in the examples' template, and the output's marker."""
    in_mod, out_mod = DIRECTIONS[direction]
    content = item.text if in_mod == "text" else item.wav
    if content is None:
        raise ValueError(f"no {'asr' if in_mod == 'text' else 'wav_path'} in the manifest for a {in_mod} prompt")
    if not prefix:
        kind = ContentType.TEXT if in_mod == "text" else ContentType.SPEECH
        return lm.segments([GenerationInput(content, kind)])
    body = _segment(lm, content, in_mod, None, None, f"audio of item {item.id}")
    return [*prefix, body, Segment(Modality(out_mod), "", marker=True)]


def build_query(lm, item: StspItem, direction: str, prefix: Sequence[Segment] = ()) -> Prompt:
    """The query's prompt as ids with modality spans (one tokenizer call on the whole string)."""
    return build_prompt(lm.tokenizer, query_segments(lm, item, direction, prefix), Modality(DIRECTIONS[direction][1]))


def query_prompt(lm, item: StspItem, direction: str, prefix: str = "") -> str:
    """The query's prompt string after a rendered few-shot `prefix` ("" for 0-shot)."""
    if not prefix:
        return render_prompt(query_segments(lm, item, direction), Modality(DIRECTIONS[direction][1]))
    return prefix + render_prompt(query_segments(lm, item, direction, [NEWLINE])[1:])
