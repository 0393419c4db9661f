"""The non-weight files of a Hugging Face export in the release's layout (tools/convert_weights/llama_to_hf.py
writes the weights and config.json around them).

What the reference loads (`LlamaForCausalLM.from_pretrained` + slow `LlamaTokenizer`) and decodes:
- tokenizer.model with the Spirit LM tokens as user-defined pieces at their ids and `[MadeuptokenN]`
  fillers up to the embedding size (no added-token files: with them the reference's output slicing
  breaks), tokenizer_config.json, special_tokens_map.json;
- generation_config.json (BOS / EOS ids: transformers falls back to them when a GenerationConfig
  without them is passed, as the reference does);
- README.md, a model card: what it is, the vocabulary layout, the run or directory it came from.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Optional

from spiritlm_jax.tokens import SpiritTokenizer
from spiritlm_jax.tokens.sp_model import USER_DEFINED, append_pieces, filler_piece, read_pieces

TREE_NAMES = {False: "spirit-lm-base-7b", True: "spirit-lm-expressive-7b"}  # the reference's model names


def release_sp_model(tok: SpiritTokenizer, vocab_size: Optional[int] = None) -> bytes:
    """tokenizer.model bytes in the release layout for `tok`: its pieces, every special token as a
    user-defined piece at its id, fillers up to `vocab_size` (default: the layout's)."""
    n = vocab_size or tok.vocab_size
    proto = tok._enc_proto  # the tokenizer's own whole-string model (same package)
    have = len(read_pieces(proto))
    if have > n:
        raise ValueError(f"the tokenizer has {have} pieces but the model only {n} embedding rows")
    return append_pieces(proto, [(filler_piece(i), 0.0, USER_DEFINED) for i in range(have, n)])


def write_tokenizer(
    tok: SpiritTokenizer, out: str | Path, vocab_size: Optional[int] = None, max_len: int = 4096
) -> list[str]:
    """tokenizer.model + tokenizer_config.json + special_tokens_map.json in `out` (release layout)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(release_sp_model(tok, vocab_size))
    names = {
        k: tok.sp.id_to_piece(i)
        for k, i in (("unk", tok.unk_id), ("bos", tok.bos_id), ("eos", tok.eos_id))
        if i is not None
    }
    flags = {"lstrip": False, "rstrip": False, "normalized": False, "single_word": False, "special": True}
    decoder = {
        str(i): {"content": tok.sp.id_to_piece(i), **flags}
        for i in (tok.unk_id, tok.bos_id, tok.eos_id)
        if i is not None
    }
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(max_len),
        "pad_token": None,
        "sp_model_kwargs": {},
        **{f"{k}_token": v for k, v in names.items()},
        "added_tokens_decoder": decoder,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps({f"{k}_token": v for k, v in names.items()}, indent=2))
    return ["tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]


def write_generation_config(tok: SpiritTokenizer, out: str | Path) -> None:
    cfg = {"_from_model_config": True, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id}
    (Path(out) / "generation_config.json").write_text(json.dumps(cfg, indent=2))


def write_model_card(
    out: str | Path, tok: SpiritTokenizer, source: str | Path, lm_summary: dict, provenance: dict
) -> None:
    lay = tok.layout
    rows = [
        f"| 0 – {lay.text_vocab_size - 1} | SentencePiece pieces |",
        f"| {lay.text_marker_id}, {lay.speech_marker_id} | `[Text]`, `[Speech]` |",
        f"| {lay.hubert_offset} – {lay.pitch_offset - 1} | `[Hu0]` … `[Hu500]` |",
    ]
    if lay.expressive:
        rows += [
            f"| {lay.pitch_offset} – {lay.style_offset - 1} | `[Pi0]` … `[Pi63]` |",
            f"| {lay.style_offset} – {lay.num_real_tokens - 1} | `[St0]` … `[St99]` |",
        ]
    vocab = lm_summary.get("vocab_size", lay.vocab_size)
    if vocab > lay.num_real_tokens:
        rows.append(f"| {lay.num_real_tokens} – {vocab - 1} | `[MadeuptokenN]` fillers (padding, never generated) |")
    prov = "\n".join(f"- {k}: {v}" for k, v in provenance.items())
    text = f"""# Spirit LM ({"EXPRESSIVE" if lay.expressive else "BASE"}) — exported by spiritlm_jax

A LLaMA language model over one stream of text and speech tokens (Spirit LM), exported from
`{source}` by `tools/convert_weights/llama_to_hf.py` on {datetime.date.today().isoformat()}.
It loads with transformers' `LlamaForCausalLM` and the slow `LlamaTokenizer`, as Meta's reference
Spirit LM code loads its release (`Spiritlm("{TREE_NAMES[lay.expressive]}")` with
`SPIRITLM_CHECKPOINTS_DIR` pointing at a tree holding this directory under `spiritlm_model/`).

## Model
{chr(10).join(f"- {k}: {v}" for k, v in lm_summary.items())}

## Vocabulary ({vocab} rows)
The Spirit LM tokens are user-defined pieces inside `tokenizer.model` (the release's layout), so the
tokenizer encodes a whole prompt string at once: `[Text]The` is `▁ [Text] The`.

| ids | tokens |
|---|---|
{chr(10).join(rows)}

## Provenance
{prov}

Speech needs the speech tokenizer (HuBERT units{", pitch and style" if lay.expressive else ""}) and a
unit vocoder the model was trained with; they are not part of this directory.
"""
    (Path(out) / "README.md").write_text(text)
