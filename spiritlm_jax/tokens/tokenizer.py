"""SpiritTokenizer: SentencePiece for text plus the Spirit LM special tokens."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from spiritlm_jax.tokens.hf_files import read_added_tokens
from spiritlm_jax.tokens.layout import TokenLayout
from spiritlm_jax.tokens.modality import TEXT_MARKER
from spiritlm_jax.tokens.units import TOKEN_PATTERN, TOKEN_RE, parse_token


class SpiritTokenizer:
    """SentencePiece for text plus the Spirit LM special tokens.

    Encoding splits a mixed string at special tokens: `[Text]hello[Speech][Hu3][Hu7]` becomes
    BOS, [Text], sp("hello"), [Speech], [Hu3], [Hu7] (each text segment is encoded on its own, as the
    reference's slow LlamaTokenizer does). BOS on and EOS off by default, as the reference.

    Special-token ids come from `added_tokens` (the official tokenizer files, see `from_dir`) when given,
    else from the layout table. The rest of the library (vocab sizes, modality masks, data pipeline)
    computes ids from `layout`, so ids from files must agree with it: the layout is derived from the
    files ([Text]'s id is the text vocabulary size; pitch/style tokens make it EXPRESSIVE) and any
    disagreement is a ValueError. Added tokens that are not Spirit LM tokens and sit past the
    SentencePiece pieces (e.g. a `<pad>`) are kept as literal tokens."""

    def __init__(
        self,
        sp_model_path: Union[str, Path],
        layout: Optional[TokenLayout] = None,
        expressive: Optional[bool] = None,
        added_tokens: Optional[Mapping[str, int]] = None,
    ):
        import sentencepiece as spm

        path = Path(sp_model_path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model {path} does not exist")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with C++ text
            raise ValueError(f"{path} is not a SentencePiece model ({e})") from None
        self.path = path
        n = self.sp.get_piece_size()
        added = dict(added_tokens or {})
        spirit = {t: i for t, i in added.items() if TOKEN_RE.fullmatch(t)}
        if spirit:
            if TEXT_MARKER not in spirit:
                raise ValueError(f"{path.parent}: the tokenizer files list Spirit LM tokens but not {TEXT_MARKER}")
            has_expr = any(t.startswith(("[Pi", "[St")) for t in spirit)
            if layout is None:
                layout = TokenLayout(spirit[TEXT_MARKER], has_expr if expressive is None else bool(expressive))
        elif layout is None:
            layout = TokenLayout(n, bool(expressive))
        if expressive is not None and layout.expressive != bool(expressive):
            raise ValueError(f"layout.expressive={layout.expressive} contradicts expressive={expressive}")
        if layout.text_vocab_size < n:
            raise ValueError(f"{path} has {n} pieces but the layout has only {layout.text_vocab_size} text ids")
        self.layout = layout

        table = layout.special_tokens()
        if spirit:
            missing = [t for t in table if t not in spirit]
            if missing:
                raise ValueError(
                    f"{path.parent}: the tokenizer files lack {len(missing)} token(s) of the "
                    f"{'EXPRESSIVE' if layout.expressive else 'BASE'} layout, e.g. {missing[:3]}"
                )
            wrong = [(t, spirit[t], i) for t, i in table.items() if spirit[t] != i]
            if wrong:
                t, theirs, mine = wrong[0]
                raise ValueError(
                    f"{path.parent}: token {t} has id {theirs} in the tokenizer files but {mine} in "
                    f"the Spirit LM layout (docs/reference.md); {len(wrong)} token(s) disagree"
                )
            self._token_to_id = {t: spirit[t] for t in table}
        else:
            self._token_to_id = table
        # other added tokens past the pieces: literal tokens (a gap id with no token stays undecodable)
        self._extra = {t: i for t, i in added.items() if t not in spirit and i >= n}
        clash = [t for t, i in self._extra.items() if i >= layout.text_vocab_size]
        if clash:
            raise ValueError(
                f"{path.parent}: added token(s) {clash[:3]} have ids at or past [Text] "
                f"({layout.text_vocab_size}), where the Spirit LM tokens live"
            )
        self._id_to_token = {i: t for t, i in {**self._token_to_id, **self._extra}.items()}
        literals = sorted(self._extra, key=len, reverse=True)
        self._split = re.compile("|".join([TOKEN_PATTERN] + [re.escape(t) for t in literals]))

        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else 0
        self.num_pieces = n

    @classmethod
    def from_dir(cls, d: Union[str, Path], expressive: Optional[bool] = None) -> "SpiritTokenizer":
        """tokenizer.model from `d`, with special-token ids from the Hugging Face tokenizer files in `d`
        when they list Spirit LM tokens (the released checkpoints do), else from the layout table.
        `expressive=None` infers it from the files (pitch/style tokens present) and is BASE otherwise;
        `expressive=False` on EXPRESSIVE files uses only their BASE tokens."""
        d = Path(d)
        path = d / "tokenizer.model"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.model in {d}")
        added = read_added_tokens(d)
        if expressive is False:
            added = {t: i for t, i in added.items() if not t.startswith(("[Pi", "[St"))}
        return cls(path, expressive=expressive, added_tokens=added)

    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

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
        if 0 <= i < self.num_pieces:
            return self.sp.id_to_piece(i)
        raise ValueError(
            f"id {i} has no token (vocabulary [0, {self.vocab_size}); "
            f"ids from {self.layout.num_real_tokens} on are padding)"
        )

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        ids: list[int] = [self.bos_id] if bos and self.bos_id is not None else []
        pos = 0
        for m in self._split.finditer(text):
            if m.start() > pos:
                ids.extend(self.sp.encode(text[pos : m.start()]))
            ids.append(self.token_to_id(m.group(0)))
            pos = m.end()
        if pos < len(text):
            ids.extend(self.sp.encode(text[pos:]))
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids -> string with special tokens written as `[Hu3]` etc. BOS/EOS are dropped unless
        `skip_special_tokens=False`; an id outside the vocabulary or on a padding row is a ValueError."""
        out: list[str] = []
        run: list[int] = []
        skip = {self.bos_id, self.eos_id} if skip_special_tokens else set()
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
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
