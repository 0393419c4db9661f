"""The text tokenizer of a bundle: which files it is, copying them into a bundle, loading it.

One way to find and load a text tokenizer, used by the data pipeline, training, the converters and
`load_bundle`: a directory holding tokenizer.model (+ the Hugging Face tokenizer files, whose Spirit
LM tokens fix the special-token ids), or a SentencePiece model file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from spiritlm_jax.tokens import SpiritTokenizer

SP_MODEL = "tokenizer.model"
TOKENIZER_FILES = (
    SP_MODEL,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


def sp_model_path(path: str | Path) -> Path:
    """tokenizer.model of a directory, or the SentencePiece model file itself."""
    p = Path(path)
    return p / SP_MODEL if p.is_dir() else p


def load_text_tokenizer(path: str | Path, expressive: Optional[bool] = None) -> SpiritTokenizer:
    """The SpiritTokenizer of a tokenizer directory or SentencePiece model file.

    `expressive`: None = the layout the files say (pitch/style tokens present: EXPRESSIVE; else BASE),
    True = the EXPRESSIVE layout (an error if the files list Spirit LM tokens without pitch/style),
    False = the BASE layout (pitch/style tokens of EXPRESSIVE files are left out)."""
    model = sp_model_path(path)
    if model.name == SP_MODEL:  # the HF tokenizer files beside it may fix the special-token ids
        if not model.is_file():
            raise FileNotFoundError(f"SentencePiece model {model} does not exist")
        return SpiritTokenizer.from_dir(model.parent, expressive=expressive)
    return SpiritTokenizer(model, expressive=bool(expressive))


def copy_tokenizer_files(src: str | Path, dest: str | Path) -> list[str]:
    """Copy the tokenizer files of `src` (a directory, or a SentencePiece model file, which lands as
    tokenizer.model) into the directory `dest`; returns the names copied."""
    src, dest = Path(src), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model = sp_model_path(src)
    copied = []
    if model.is_file():
        shutil.copy(model, dest / SP_MODEL)
        copied.append(SP_MODEL)
    if model.name == SP_MODEL or src.is_dir():  # HF files only belong with a tokenizer.model directory
        for name in TOKENIZER_FILES[1:]:
            if (model.parent / name).is_file():
                shutil.copy(model.parent / name, dest / name)
                copied.append(name)
    return copied
