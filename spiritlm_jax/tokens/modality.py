"""Modality: text or speech, the two kinds of content in a Spirit LM token stream."""

from __future__ import annotations

import enum

TEXT_MARKER, SPEECH_MARKER = "[Text]", "[Speech]"


class Modality(str, enum.Enum):
    TEXT = "text"
    SPEECH = "speech"

    @property
    def marker(self) -> str:
        """The token that opens a span of this modality: [Text] or [Speech]."""
        return TEXT_MARKER if self is Modality.TEXT else SPEECH_MARKER
