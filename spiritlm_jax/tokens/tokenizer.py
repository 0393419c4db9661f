"""SpiritTokenizer: SentencePiece for text plus the Spirit LM special tokens, in the released layouts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from spiritlm_jax.tokens.hf_files import read_added_tokens, read_tokenizer_config
from spiritlm_jax.tokens.layout import TokenLayout
from spiritlm_jax.tokens.modality import TEXT_MARKER
from spiritlm_jax.tokens.sp_model import FILLER_RE, USER_DEFINED, append_pieces, filler_piece, read_pieces
from spiritlm_jax.tokens.sp_model import without_dummy_prefix as _no_dummy
from spiritlm_jax.tokens.units import TOKEN_PATTERN, TOKEN_RE, parse_token

IN_MODEL, ADDED, TABLE = "in_model", "added_tokens", "table"  # where the special-token ids come from
SPIECE = "\u2581"
_EXPR_PREFIXES = ("[Pi", "[St")


def _sp(proto: bytes):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=proto)


class SpiritTokenizer:
    """SentencePiece for text plus the Spirit LM special tokens, with the ids and the encoding of the
    tokenizer the reference loads (transformers' slow `LlamaTokenizer`, BOS on, EOS off).

    Where the special-token ids come from (`source`, detected by `from_dir`, docs/tokens.md):
    - `in_model`: the tokens are user-defined pieces inside tokenizer.model (the release: `[Text]` at
      32000 ... and `[MadeuptokenN]` fillers up to 32512 / 32768, which are padding, never generated);
    - `added_tokens`: added tokens in added_tokens.json / tokenizer.json / tokenizer_config.json;
    - `table`: no Spirit LM tokens in the files: the layout table after the pieces (a vocabulary built
      from scratch; it encodes exactly as the release layout the exporters write for it).

    Encoding is what the reference's tokenizer gives for the whole prompt string: BOS + SentencePiece of
    the whole string with the special tokens as atomic pieces (so `[Text]The` is `▁ [Text] The`), except
    for added tokens under `legacy` (transformers' default when tokenizer_config.json does not say),
    where each text segment between special tokens is encoded on its own (`[Text] ▁The`).

    The rest of the library computes ids from `layout`, so ids from files must agree with it: the layout
    is derived from the files ([Text]'s id is the text vocabulary size; pitch/style tokens make it
    EXPRESSIVE) and any disagreement is a ValueError naming the first token that differs."""

    def __init__(
        self,
        sp_model_path: Union[str, Path],
        layout: Optional[TokenLayout] = None,
        expressive: Optional[bool] = None,
        added_tokens: Optional[Mapping[str, int]] = None,
        legacy: bool = True,
    ):
        path = Path(sp_model_path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model {path} does not exist")
        proto = path.read_bytes()
        try:
            self.sp = _sp(proto)
            pieces = read_pieces(proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with C++ text
            raise ValueError(f"{path} is not a SentencePiece model ({e})") from None
        self.path = path
        in_model = {p.piece: i for i, p in enumerate(pieces) if TOKEN_RE.fullmatch(p.piece)}
        added = dict(added_tokens or {})
        spirit_added = {t: i for t, i in added.items() if TOKEN_RE.fullmatch(t)}
        if in_model:
            self.source, spirit = IN_MODEL, in_model
            clash = [t for t, i in spirit_added.items() if in_model.get(t) != i]
            if clash:
                raise ValueError(
                    f"{path.parent}: {clash[0]} is a piece of tokenizer.model (id {in_model.get(clash[0])}) and an "
                    f"added token with id {spirit_added[clash[0]]}"
                )
        elif spirit_added:
            self.source, spirit = ADDED, spirit_added
        else:
            self.source, spirit = TABLE, {}
        fillers = [i for i, p in enumerate(pieces) if FILLER_RE.fullmatch(p.piece)]
        if self.source == TABLE and fillers:
            raise ValueError(
                f"{path}: tokenizer.model has {len(fillers)} [MadeuptokenN] filler pieces (from id {fillers[0]}) "
                "but no Spirit LM tokens ([Text], [Speech], [Hu0] ...) as pieces or added tokens"
            )
        n = len(pieces)
        if spirit:
            if TEXT_MARKER not in spirit:
                raise ValueError(
                    f"{path.parent}: the tokenizer lists {len(spirit)} Spirit LM token(s) "
                    f"({sorted(spirit, key=spirit.get)[:3]}) but not {TEXT_MARKER}"
                )
            has_expr = any(t.startswith(_EXPR_PREFIXES) for t in spirit)
            if layout is None:
                layout = TokenLayout(spirit[TEXT_MARKER], has_expr if expressive is None else bool(expressive))
        elif layout is None:
            layout = TokenLayout(n, bool(expressive))
        if expressive is not None and layout.expressive != bool(expressive):
            raise ValueError(f"layout.expressive={layout.expressive} contradicts expressive={expressive}")
        self.num_pieces = layout.text_vocab_size if self.source == IN_MODEL else n
        if layout.text_vocab_size < self.num_pieces:
            raise ValueError(f"{path} has {n} pieces but the layout has only {layout.text_vocab_size} text ids")
        self.layout = layout

        table = layout.special_tokens()
        if spirit:
            missing = [t for t in table if t not in spirit]
            if missing:
                raise ValueError(
                    f"{path.parent}: the tokenizer ({self.source}) lacks {len(missing)} token(s) of the "
                    f"{'EXPRESSIVE' if layout.expressive else 'BASE'} layout, e.g. {missing[:3]}"
                )
            wrong = [(t, spirit[t], i) for t, i in table.items() if spirit[t] != i]
            if wrong:
                t, theirs, mine = wrong[0]
                raise ValueError(
                    f"{path.parent}: token {t} has id {theirs} in the tokenizer ({self.source}) but {mine} in "
                    f"the Spirit LM layout (docs/tokens.md); {len(wrong)} token(s) disagree"
                )
        if self.source == IN_MODEL:
            past = [(i, p.piece) for i, p in enumerate(pieces) if i >= layout.num_real_tokens]
            odd = [(i, p) for i, p in past if not FILLER_RE.fullmatch(p) and not p.startswith(_EXPR_PREFIXES)]
            if odd:
                raise ValueError(
                    f"{path}: piece {odd[0][1]!r} at id {odd[0][0]} sits past the Spirit LM tokens, where only "
                    "[MadeuptokenN] fillers belong"
                )
        self._token_to_id = table
        # other added tokens past the pieces: literal tokens (a gap id with no token stays undecodable)
        self._extra = {t: i for t, i in added.items() if t not in spirit_added and i >= n}
        clash = [t for t, i in self._extra.items() if i >= layout.text_vocab_size]
        if clash:
            raise ValueError(
                f"{path.parent}: added token(s) {clash[:3]} have ids at or past [Text] "
                f"({layout.text_vocab_size}), where the Spirit LM tokens live"
            )
        self._id_to_token = {i: t for t, i in {**self._token_to_id, **self._extra}.items()}
        literals = sorted(self._extra, key=len, reverse=True)
        self._split = re.compile("|".join([TOKEN_PATTERN] + [re.escape(t) for t in literals]))

        # whole-string encoding: a SentencePiece model holding every special token as a user-defined
        # piece at its id (the file itself for `in_model`; built in memory otherwise)
        self.legacy = bool(legacy)
        self.whole_string = self.source != ADDED or not self.legacy
        if self.source == IN_MODEL:
            self._enc_proto = proto
        else:
            first = n
            extra = [
                (self._id_to_token.get(i, filler_piece(i)), 0.0, USER_DEFINED)
                for i in range(first, layout.num_real_tokens)
            ]
            self._enc_proto = append_pieces(proto, extra)
        self._enc = _sp(self._enc_proto) if self.source != IN_MODEL else self.sp
        self._nodummy = _sp(_no_dummy(self._enc_proto))
        self._n_enc = self._enc.get_piece_size()
        self._fillers = {i for i in fillers if i >= layout.num_real_tokens}

        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.unk_id = self.sp.unk_id() if self.sp.unk_id() >= 0 else None
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else 0
        self._lead = self._whole(TEXT_MARKER)[:-1]  # what precedes a leading marker ([▁] for LLaMA)

    @classmethod
    def from_dir(cls, d: Union[str, Path], expressive: Optional[bool] = None) -> "SpiritTokenizer":
        """tokenizer.model from `d`, its special-token ids found where they are (in the model, in the
        Hugging Face added-token files, or neither: the layout table), `legacy` from tokenizer_config.json
        (absent: True, as transformers). `expressive=None` infers it (pitch/style tokens present);
        `expressive=False` on EXPRESSIVE files uses only their BASE tokens."""
        d = Path(d)
        path = d / "tokenizer.model"
        if not path.is_file():
            found = sorted(p.name for p in d.iterdir())[:12] if d.is_dir() else []
            raise FileNotFoundError(
                f"no tokenizer.model in {d}"
                + (f" (found: {', '.join(found)})" if d.is_dir() else " (no such directory)")
            )
        added = read_added_tokens(d)
        legacy = read_tokenizer_config(d).get("legacy")
        if expressive is False:
            added = {t: i for t, i in added.items() if not t.startswith(_EXPR_PREFIXES)}
        return cls(path, expressive=expressive, added_tokens=added, legacy=True if legacy is None else bool(legacy))

    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

    @property
    def lead_ids(self) -> list[int]:
        """The ids a sequence starting with a marker begins with after BOS ([▁] for a whole-string
        tokenizer with SentencePiece's dummy prefix; [] for per-segment added tokens)."""
        return list(self._lead)

    def token_to_id(self, token: str) -> int:
        """Id of a special token ([Text], [Hu3], ...) or added literal token."""
        if token in self._token_to_id:
            return self._token_to_id[token]
        if token in self._extra:
            return self._extra[token]
        stream, _ = parse_token(token)  # raises for malformed / out-of-range tokens
        raise ValueError(
            f"{token!r}: {stream} tokens are not part of this tokenizer's "
            f"{'EXPRESSIVE' if self.layout.expressive else 'BASE'} layout "
            f"(pitch and style exist only in the EXPRESSIVE layout)"
        )

    def id_to_token(self, i: int) -> str:
        if i in self._id_to_token:
            return self._id_to_token[i]
        if 0 <= i < self.num_pieces or (self.source == IN_MODEL and 0 <= i < self._n_enc):
            return self._enc.id_to_piece(i)
        raise ValueError(
            f"id {i} has no token (vocabulary [0, {self.vocab_size}); "
            f"ids from {self.layout.num_real_tokens} on are padding)"
        )

    # ----- encoding --------------------------------------------------------------------------------
    def _check_tokens(self, text: str) -> None:
        for m in self._split.finditer(text):
            self.token_to_id(m.group(0))  # malformed, out-of-range or out-of-layout tokens raise

    def _whole(self, text: str) -> list[int]:
        if not self.legacy and self.source == ADDED:
            return self._nonlegacy(text)
        return self._enc.encode(text)

    def _nonlegacy(self, text: str) -> list[int]:
        """transformers' non-legacy slow LlamaTokenizer with added tokens: '▁' + text, split at the added
        tokens, each segment through SentencePiece without a dummy prefix."""
        text = SPIECE + text.replace(SPIECE, " ")
        ids: list[int] = []
        pos = 0
        for m in self._split.finditer(text):
            if m.start() > pos:
                ids.extend(self._nodummy.encode(text[pos : m.start()]))
            ids.append(self.token_to_id(m.group(0)))
            pos = m.end()
        if pos < len(text):
            ids.extend(self._nodummy.encode(text[pos:]))
        return ids

    def _segments(self, text: str) -> list[int]:
        ids: list[int] = []
        pos = 0
        for m in self._split.finditer(text):
            if m.start() > pos:
                ids.extend(self.sp.encode(text[pos : m.start()]))
            ids.append(self.token_to_id(m.group(0)))
            pos = m.end()
        if pos < len(text):
            ids.extend(self.sp.encode(text[pos:]))
        return ids

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """The reference tokenizer's ids of a whole string (see the class docstring)."""
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        ids: list[int] = [self.bos_id] if bos and self.bos_id is not None else []
        self._check_tokens(text)
        if text:
            body = self._whole(text) if self.whole_string else self._segments(text)
            past = [i for i in body if i >= self.vocab_size]
            if past:  # e.g. an EXPRESSIVE release's pitch piece read with the BASE layout
                raise ValueError(
                    f"{text[:40]!r}: piece {self.id_to_token(past[0])!r} (id {past[0]}) is outside the "
                    f"vocabulary [0, {self.vocab_size})"
                )
            ids.extend(body)
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def encode_after_marker(self, text: str) -> list[int]:
        """Ids of `text` where it follows a [Text] marker in a whole string: what `encode('[Text]' + text)`
        gives after the marker (data preparation builds sequences from such pieces)."""
        if not text:
            return []
        ids = self.encode(TEXT_MARKER + text, bos=False)
        return ids[len(self._lead) + 1 :]

    # ----- decoding --------------------------------------------------------------------------------
    def _check_ids(self, ids) -> list[int]:
        out = np.asarray(ids, dtype=np.int64).reshape(-1).tolist()
        for i in out:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
        return out

    def _pieces_to_string(self, pieces: list[str], specials: set[str]) -> str:
        """transformers' LlamaTokenizer.convert_tokens_to_string (4.46, add_prefix_space on)."""
        if not pieces:
            return ""
        sp = self._enc if self.legacy else self._nodummy
        pieces = list(pieces)
        if pieces[0].startswith(SPIECE):
            pieces[0] = pieces[0][1:]
        out, run, prev_special = "", [], False
        for k, p in enumerate(pieces):
            if p in specials:
                if not prev_special and k != 0 and self.legacy:
                    out += " "
                out += sp.decode_pieces(run) + p
                prev_special, run = True, []
            else:
                if prev_special and k == 1 and not p.startswith(SPIECE):
                    out += " "
                run.append(p)
                prev_special = False
        return out + sp.decode_pieces(run)

    def _special_pieces(self) -> set[str]:
        return {self.sp.id_to_piece(i) for i in (self.bos_id, self.eos_id, self.unk_id) if i is not None}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids -> string with special tokens written as `[Hu3]` etc. BOS/EOS (and <unk>, for whole-string
        tokenizers, as the reference) are dropped unless `skip_special_tokens=False`; an id outside the
        vocabulary or on a padding row without a piece is a ValueError. For whole-string tokenizers this
        is the reference tokenizer's string (`skip_special_tokens`, no clean-up); for per-segment added
        tokens, the segments joined without the spaces transformers puts between them
        (`reference_decode` has those)."""
        ids = self._check_ids(ids)
        if self.whole_string:
            drop = {self.bos_id, self.eos_id, self.unk_id} if skip_special_tokens else set()
            pieces = [
                self.id_to_token(i) if i >= self._n_enc else self._enc.id_to_piece(i) for i in ids if i not in drop
            ]
            return self._pieces_to_string(pieces, self._special_pieces())
        out: list[str] = []
        run: list[int] = []
        skip = {self.bos_id, self.eos_id} if skip_special_tokens else set()
        for i in ids:
            if i in skip:
                continue
            if i < self.num_pieces and not self.sp.is_control(i):
                run.append(i)
                continue
            if run:
                out.append(self.sp.decode(run))
                run = []
            out.append(self.id_to_token(i))  # control pieces (<s>), special and literal tokens
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)

    def reference_decode(self, ids: Sequence[int]) -> str:
        """Exactly the reference's `tokenizer.decode(ids, skip_special_tokens=True,
        clean_up_tokenization_spaces=False)` (transformers 4.46 slow LlamaTokenizer): `decode` for
        whole-string tokenizers; with added tokens, the text between them is decoded run by run and the
        pieces joined by single spaces ('[Text] The cat')."""
        ids = self._check_ids(ids)
        if self.source != ADDED:
            return self.decode(ids)
        drop = {self.bos_id, self.eos_id, self.unk_id}
        parts: list[str] = []
        run: list[str] = []
        for i in ids:
            if i in drop:
                continue
            if i < self.num_pieces:
                run.append(self.sp.id_to_piece(i))
                continue
            if run:
                text = self._pieces_to_string(run, set())
                parts.extend([text] if text else [])  # an empty run adds no part (transformers)
                run = []
            parts.append(self.id_to_token(i))
        if run:
            parts.append(self._pieces_to_string(run, set()))
        return " ".join(parts)
