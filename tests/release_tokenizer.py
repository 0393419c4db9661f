"""Release-like Spirit LM tokenizers, built with sentencepiece's own ModelProto (protobuf), not with
the library's writer, so tests compare the library against an independent construction.

- `train_llama_like(d)`: a small BPE model with LLaMA-2's normaliser settings.
- `pad_pieces(model, 32000)`: normal pieces (single CJK characters, never in the English test text)
  up to LLaMA-2's 32000 text pieces.
- `in_model_layout(...)`: (a) the Spirit LM tokens as user-defined pieces at 32000+ and
  `[MadeuptokenN]` fillers up to 32512 / 32768 (what the release ships: no added-token files).
- `added_token_dir(...)`: (b) the same tokens as added tokens in tokenizer_config.json.

Runs in any Python with sentencepiece + protobuf (no spiritlm_jax import), so the same builder serves a
throw-away transformers 4.46 environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ENGLISH = Path(__file__).parent / "data" / "english.txt"


def spirit_tokens(expressive: bool) -> list[str]:
    toks = ["[Text]", "[Speech]"] + [f"[Hu{i}]" for i in range(501)]
    if expressive:
        toks += [f"[Pi{i}]" for i in range(64)] + [f"[St{i}]" for i in range(100)]
    return toks


def train_llama_like(d: Path, vocab_size: int = 300) -> Path:
    import sentencepiece as spm

    d.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=str(ENGLISH),
        model_prefix=str(d / "base"),
        vocab_size=vocab_size,
        model_type="bpe",
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        minloglevel=2,
        num_threads=1,
    )
    return d / "base.model"


def _proto(path: Path):
    from sentencepiece import sentencepiece_model_pb2 as pb2

    m = pb2.ModelProto()
    m.ParseFromString(Path(path).read_bytes())
    return m, pb2


def pad_pieces(model: Path, out: Path, n: int = 32000) -> Path:
    m, pb2 = _proto(model)
    k = 0
    while len(m.pieces) < n:
        p = m.pieces.add()
        p.piece, p.score, p.type = chr(0x4E00 + k), -1000.0 - k, pb2.ModelProto.SentencePiece.NORMAL
        k += 1
    out.write_bytes(m.SerializeToString())
    return out


def in_model_layout(padded: Path, d: Path, expressive: bool, legacy=None) -> Path:
    """(a): tokenizer.model with the Spirit tokens + fillers, tokenizer_config.json, special_tokens_map.json."""
    m, pb2 = _proto(padded)
    n0 = len(m.pieces)
    for t in spirit_tokens(expressive):
        p = m.pieces.add()
        p.piece, p.score, p.type = t, 0.0, pb2.ModelProto.SentencePiece.USER_DEFINED
    total = -(-len(m.pieces) // 256) * 256
    while len(m.pieces) < total:
        i = len(m.pieces)
        p = m.pieces.add()
        p.piece, p.score, p.type = f"[Madeuptoken{i}]", 0.0, pb2.ModelProto.SentencePiece.USER_DEFINED
    assert n0 <= 32000
    d.mkdir(parents=True, exist_ok=True)
    (d / "tokenizer.model").write_bytes(m.SerializeToString())
    _hf_files(d, {}, legacy)
    return d


def added_token_dir(padded: Path, d: Path, expressive: bool, legacy=None) -> Path:
    """(b): the plain 32000-piece tokenizer.model + the Spirit tokens in tokenizer_config.json."""
    import shutil

    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(padded, d / "tokenizer.model")
    n = len(_proto(padded)[0].pieces)
    _hf_files(d, {t: n + i for i, t in enumerate(spirit_tokens(expressive))}, legacy)
    return d


def _hf_files(d: Path, added: dict, legacy) -> None:
    flags = {"lstrip": False, "rstrip": False, "normalized": False, "single_word": False}
    decoder = {
        "0": {"content": "<unk>", "special": True, **flags},
        "1": {"content": "<s>", "special": True, **flags},
        "2": {"content": "</s>", "special": True, **flags},
    }
    decoder.update({str(i): {"content": t, "special": False, **flags} for t, i in added.items()})
    cfg = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "sp_model_kwargs": {},
        "added_tokens_decoder": decoder,
    }
    if legacy is not None:
        cfg["legacy"] = legacy
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    (d / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    )


PROMPTS = [
    "[Text]The cat sat on the mat",
    "[Text] leading space",
    "[Text]trailing space ",
    "[Text]two  spaces and\nnewline\n",
    "[Speech][Hu12][Hu400][Hu3]",
    "[Speech][Hu12][Hu400][Text]",
    "[Text]hello world[Speech][Hu7][Hu8][Hu9]",
    "[Speech][Hu1][Hu2][Text]and then [Speech][Hu5]",
    "[Text]numbers 12345 and punctuation!?",
    "[Text]a[Speech][Hu0][Text] b [Speech]",
    "[Text]bracket [not a token] here",
    " [Text]space first",
    "plain text without markers",
    "[Text]tab\there",
    "[Text]ümlaut and émoji 🙂",
    "[Speech][Hu5]\n[Text]after newline",
]
EXPRESSIVE_PROMPTS = [
    "[Speech][St81][Pi13][Hu78][Hu42][Hu81][Hu159][Pi3]",
    "[Text]hi[Speech][St3][Pi63][Hu500][Text]",
]


def random_prompts(n: int, expressive: bool, seed: int = 0) -> list[str]:
    """Prompts the reference builds and users type: text, speech, mixed, leading/trailing spaces, newlines."""
    rng = np.random.default_rng(seed)
    words = ENGLISH.read_text().split()
    streams = ["Hu", "Pi", "St"] if expressive else ["Hu"]
    sizes = {"Hu": 501, "Pi": 64, "St": 100}
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.integers(1, 5)):
            if rng.random() < 0.5:
                k = rng.integers(1, 8)
                text = " ".join(rng.choice(words, k))
                if rng.random() < 0.2:
                    text = " " + text
                if rng.random() < 0.2:
                    text += rng.choice([" ", "\n", "  ", "\n\n", ". "])
                parts.append("[Text]" + text)
            else:
                units = "".join(f"[{s}{rng.integers(sizes[s])}]" for s in rng.choice(streams, rng.integers(1, 12)))
                parts.append("[Speech]" + units + ("\n" if rng.random() < 0.1 else ""))
        if rng.random() < 0.3:
            parts.append(rng.choice(["[Text]", "[Speech]"]))
        out.append("".join(parts))
    return out
