"""How the reference reads a generated string (ARBITRARY-mode outputs), rule for rule.

The reference decodes `prompt + continuation` to one string, slices the prompt's characters off and
reads the rest with character-level rules; these functions are those rules, so ARBITRARY outputs here
split, keep and drop chunks exactly where the reference's do (tested on its edge cases):

- `starts_with_speech_token` / `ends_with_speech_token`: a `[Hu`/`[Pi`/`[St` token at the very start /
  end, its `]` within 10 characters (a trailing newline means the string does not end in speech);
- `last_speech_start`: where the last run of adjacent unit tokens begins;
- `parse_chunks`: (content, modality) chunks, markers dropped, `[Hu...]`-like tokens speech, the rest text;
- `hubert_count_plus_one`: the reference's `len(chunk.split("[Hu"))`, one more than the HuBERT tokens.
"""

from __future__ import annotations

from typing import Optional

from spiritlm_jax.tokens.modality import SPEECH_MARKER, TEXT_MARKER, Modality
from spiritlm_jax.tokens.units import PREFIX, TOKEN_RE

UNIT_PREFIXES = tuple(PREFIX.values())  # Hu, Pi, St


def starts_with_speech_token(s: Optional[str]) -> bool:
    if s is None or len(s) <= 4 or s[0] != "[":
        return False
    for end in range(1, min(len(s), 11)):  # the shortest token is [Hu1], the longest [Huxxxxx]
        if s[end] == "]" and end >= 4:
            return s[1:3] in UNIT_PREFIXES
    return False


def ends_with_speech_token(s: Optional[str]) -> bool:
    if s is None or len(s) <= 4 or s[-1] != "]":
        return False
    n = len(s)
    for start in range(n - 2, max(n - 12, -1), -1):
        if s[start] == "[" and start + 3 < n:
            return s[start + 1 : start + 3] in UNIT_PREFIXES
    return False


def last_speech_start(s: str) -> Optional[int]:
    """Start of the last run of adjacent unit tokens in `s` (None when it has none)."""
    matches = [m for m in TOKEN_RE.finditer(s) if m.group(1) is None]  # unit tokens, not markers
    if not matches:
        return None
    pos = matches[-1].start()
    for m in reversed(matches[:-1]):
        if m.end() != pos:
            break
        pos = m.start()
    return pos


def parse_chunks(s: str) -> list[tuple[str, Modality]]:
    """(content, modality) chunks of a generated string: `[Text]`/`[Speech]` dropped (they do not end a
    chunk), a `[Hu`/`[Pi`/`[St` token up to its `]` is speech, everything else text, neighbours of one
    modality joined."""
    chunks: list[tuple[str, Modality]] = []
    i, n = 0, len(s)
    while i < n:
        if s[i] == "[":
            if s.startswith(TEXT_MARKER, i):
                i += len(TEXT_MARKER)
                continue
            if s.startswith(SPEECH_MARKER, i):
                i += len(SPEECH_MARKER)
                continue
            if i + 2 < n and s[i + 1 : i + 3] in UNIT_PREFIXES:
                j = s.find("]", i + 3)
                j = n + 1 if j < 0 else j + 1
                piece, modality = s[i:j], Modality.SPEECH
            else:
                j, piece, modality = i + 1, "[", Modality.TEXT
        else:
            j = s.find("[", i)
            j = n if j < 0 else j
            piece, modality = s[i:j], Modality.TEXT
        if chunks and chunks[-1][1] is modality:
            chunks[-1] = (chunks[-1][0] + piece, modality)
        else:
            chunks.append((piece, modality))
        i = j
    return chunks


def hubert_count_plus_one(s: str) -> int:
    return s.count("[Hu") + 1
