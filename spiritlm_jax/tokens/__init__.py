"""Spirit LM tokens, the only owner of the token grammar (docs/tokens.md):

- `modality`  Modality (TEXT, SPEECH) and the [Text]/[Speech] markers
- `units`     unit streams (STREAMS, RATES, N_UNITS, PREFIX), units <-> token strings, THE token pattern
- `layout`    TokenLayout (id ranges), ids allowed per output modality, splitting ids into modality spans
- `tokenizer` SpiritTokenizer (SentencePiece + the special tokens)
- `hf_files`  the added-token tables of Hugging Face tokenizer directories
- `sp_model`  the pieces of a SentencePiece model, read and extended (the release layout) without protobuf
- `prompt`    the one prompt builder (segments -> one string -> ids with modality spans)
"""

from spiritlm_jax.tokens.hf_files import read_added_tokens, read_tokenizer_config
from spiritlm_jax.tokens.layout import Span, TokenLayout, count_hubert, modality_chunks, split_ids
from spiritlm_jax.tokens.modality import SPEECH_MARKER, TEXT_MARKER, Modality
from spiritlm_jax.tokens.prompt import Prompt, Segment, build_prompt, check_text, encode_prompt, render_prompt
from spiritlm_jax.tokens.tokenizer import SpiritTokenizer
from spiritlm_jax.tokens.units import (
    DEDUP,
    MERGE_ORDER,
    MOST_COMMON_STYLES,
    N_UNITS,
    PREFIX,
    RATES,
    STREAM_OF_PREFIX,
    STREAMS,
    TOKEN_PATTERN,
    TOKEN_PATTERN_ASCII,
    TOKEN_RE,
    Units,
    is_unit_string,
    last_speech_start,
    merge_units,
    merged_to_string,
    parse_token,
    split_string,
    string_to_units,
    unit_tokens,
    units_to_string,
)

__all__ = [
    "DEDUP",
    "MERGE_ORDER",
    "MOST_COMMON_STYLES",
    "N_UNITS",
    "PREFIX",
    "RATES",
    "SPEECH_MARKER",
    "STREAMS",
    "STREAM_OF_PREFIX",
    "TEXT_MARKER",
    "TOKEN_PATTERN",
    "TOKEN_PATTERN_ASCII",
    "TOKEN_RE",
    "Modality",
    "Prompt",
    "Segment",
    "Span",
    "SpiritTokenizer",
    "TokenLayout",
    "Units",
    "build_prompt",
    "check_text",
    "count_hubert",
    "encode_prompt",
    "is_unit_string",
    "last_speech_start",
    "merge_units",
    "merged_to_string",
    "modality_chunks",
    "parse_token",
    "read_added_tokens",
    "read_tokenizer_config",
    "render_prompt",
    "split_ids",
    "split_string",
    "string_to_units",
    "unit_tokens",
    "units_to_string",
]
