"""The pieces of a SentencePiece model file, read and extended without protobuf.

A SentencePiece model is a serialized `ModelProto`; its pieces are the repeated field 1, each a
message {1: piece (string), 2: score (float), 3: type (enum)}. Protocol buffers allow a repeated field
to continue anywhere in the message, so appending pieces is appending records to the file's bytes:
that is how the release layout (the Spirit LM tokens as user-defined pieces inside tokenizer.model,
padded with `[MadeuptokenN]` fillers, docs/tokens.md) is written here, and the types are read back
the same way (the sentencepiece Python API does not say whether a piece is user-defined).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Iterable, NamedTuple, Union

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
FILLER_RE = re.compile(r"\[Madeuptoken(\d+)\]")


def filler_piece(i: int) -> str:
    """The padding piece at id `i` of the release layout."""
    return f"[Madeuptoken{i}]"


class Piece(NamedTuple):
    piece: str
    score: float
    type: int


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7


def _put_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _fields(buf: bytes):
    """(field number, wire type, value) of one message: ints for varints, bytes for the rest."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        yield num, wire, val


def _as_bytes(model: Union[str, Path, bytes]) -> bytes:
    return bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()


def read_pieces(model: Union[str, Path, bytes]) -> list[Piece]:
    """The pieces of a SentencePiece model (a path or its bytes), in id order."""
    out = []
    for num, wire, val in _fields(_as_bytes(model)):
        if num != 1 or wire != 2:
            continue
        piece, score, typ = "", 0.0, NORMAL
        for n, w, v in _fields(val):
            if n == 1 and w == 2:
                piece = v.decode("utf-8")
            elif n == 2 and w == 5:
                score = struct.unpack("<f", v)[0]
            elif n == 3 and w == 0:
                typ = v
        out.append(Piece(piece, score, typ))
    return out


def append_pieces(model: Union[str, Path, bytes], pieces: Iterable[tuple[str, float, int]]) -> bytes:
    """The model's bytes with `pieces` ((piece, score, type) each) added after its last piece."""
    buf = bytearray(_as_bytes(model))
    for piece, score, typ in pieces:
        text = piece.encode("utf-8")
        msg = b"\x0a" + _put_varint(len(text)) + text + b"\x15" + struct.pack("<f", float(score))
        msg += b"\x18" + _put_varint(int(typ))
        buf += b"\x0a" + _put_varint(len(msg)) + msg
    return bytes(buf)


def release_pieces(special_tokens: Iterable[str], first_id: int, vocab_size: int) -> list[Piece]:
    """The pieces the release layout appends at `first_id`: the Spirit LM tokens as user-defined pieces,
    then `[MadeuptokenN]` fillers (N = their id) up to `vocab_size`."""
    pieces = [Piece(t, 0.0, USER_DEFINED) for t in special_tokens]
    pieces += [Piece(filler_piece(i), 0.0, USER_DEFINED) for i in range(first_id + len(pieces), vocab_size)]
    return pieces


def without_dummy_prefix(model: Union[str, Path, bytes]) -> bytes:
    """The model with `normalizer_spec.add_dummy_prefix = false` (a singular sub-message given twice is
    merged, so one more normalizer_spec record {add_dummy_prefix: 0} is appended)."""
    return _as_bytes(model) + b"\x1a\x02\x18\x00"
