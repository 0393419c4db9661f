"""The released Spirit LM tokenizer layouts, against the tokenizer the reference loads.

The reference loads transformers 4.46's slow `LlamaTokenizer` (BOS on, EOS off). With the Spirit LM
tokens inside tokenizer.model (the release) that is BOS + sentencepiece.encode(whole prompt string), so
ids are compared with the `sentencepiece` package directly. Decoded strings are compared with strings
recorded once from transformers 4.46.3 in a throw-away environment (`tools/tokenizer_parity_446.py`
reruns that check; transformers 5 has no slow tokenizer).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from spiritlm_jax.tokens import SpiritTokenizer, TokenLayout
from spiritlm_jax.tokens.sp_model import USER_DEFINED, append_pieces, read_pieces, release_pieces
from tests import release_tokenizer as R


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    d = tmp_path_factory.mktemp("release")
    return R.pad_pieces(R.train_llama_like(d / "base"), d / "padded.model")


@pytest.fixture(scope="module")
def release(padded, tmp_path_factory):
    d = tmp_path_factory.mktemp("layouts")
    return {
        "base": R.in_model_layout(padded, d / "base", expressive=False),
        "expressive": R.in_model_layout(padded, d / "expressive", expressive=True),
        "added": R.added_token_dir(padded, d / "added", expressive=True),
        "added_nonlegacy": R.added_token_dir(padded, d / "added_nl", expressive=False, legacy=False),
    }


@pytest.mark.parametrize("variant", ["base", "expressive"])
def test_in_model_layout_is_the_reference_tokenizer(release, variant):
    import sentencepiece as spm

    d = release[variant]
    expressive = variant == "expressive"
    tok = SpiritTokenizer.from_dir(d)
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    assert tok.source == "in_model" and tok.layout == TokenLayout(32000, expressive)
    assert tok.vocab_size == sp.get_piece_size() == (32768 if expressive else 32512)
    prompts = R.PROMPTS + (R.EXPRESSIVE_PROMPTS if expressive else []) + R.random_prompts(150, expressive)
    ids_equal = decoded_equal = 0
    for p in prompts:
        ids = tok.encode(p)
        ids_equal += ids == [1] + sp.encode(p)
        # the reference slices len(prompt) characters off its decoded output: the decoded prompt must be it
        decoded_equal += tok.decode(ids) == tok.reference_decode(ids) == (p.lstrip() if p[:1] == " " else p)
    assert ids_equal == decoded_equal == len(prompts), (ids_equal, decoded_equal, len(prompts))
    assert tok.encode("[Text]The")[:3] == [1, sp.piece_to_id("\u2581"), 32000]  # `▁ [Text] The`
    # fillers are padding: never generated (modality masks), but they are pieces the reference decodes
    filler = tok.layout.num_real_tokens
    assert sp.id_to_piece(filler) == f"[Madeuptoken{filler}]" and tok.decode([filler]) == f"[Madeuptoken{filler}]"
    assert not tok.layout.allowed_ids(tok.vocab_size)[filler:].any()
    with pytest.raises(ValueError, match="out of range"):
        tok.encode("[Speech][Hu501]")
    if not expressive:
        with pytest.raises(ValueError, match="EXPRESSIVE"):
            tok.encode("[Speech][Pi3]")
    else:  # the BASE tokens of an EXPRESSIVE release
        assert SpiritTokenizer.from_dir(d, expressive=False).layout == TokenLayout(32000, False)


# recorded from transformers 4.46.3 (tools/tokenizer_parity_446.py): decode(encode(p)) with
# skip_special_tokens=True, clean_up_tokenization_spaces=False, for the added-token layout
ADDED_LEGACY_446 = {
    "[Text]The cat sat on the mat": "[Text] The cat sat on the mat",
    "[Speech][Hu12][Hu400][Hu3]": "[Speech] [Hu12] [Hu400] [Hu3]",
    "[Speech][Hu1][Hu2][Text]and then [Speech][Hu5]": "[Speech] [Hu1] [Hu2] [Text] and then  [Speech] [Hu5]",
    " [Text]space first": "[Text] space first",
    "[Speech][Hu5]\n[Text]after newline": "[Speech] [Hu5] \n [Text] after newline",
}


def test_added_token_layouts_encode_and_decode_as_the_reference(release):
    import sentencepiece as spm

    legacy = SpiritTokenizer.from_dir(release["added"])
    assert legacy.source == "added_tokens" and legacy.legacy and legacy.layout == TokenLayout(32000, True)
    sp = spm.SentencePieceProcessor(model_file=str(release["added"] / "tokenizer.model"))
    # legacy: each text segment between special tokens through SentencePiece on its own
    assert legacy.encode("[Text]The cat") == [1, 32000, *sp.encode("The cat")]
    for p, s in ADDED_LEGACY_446.items():
        assert legacy.reference_decode(legacy.encode(p)) == s
        assert legacy.decode(legacy.encode(p)) == p  # ours: no spaces around the special tokens
    nonlegacy = SpiritTokenizer.from_dir(release["added_nonlegacy"])
    assert not nonlegacy.legacy and nonlegacy.layout == TokenLayout(32000, False)
    base = SpiritTokenizer.from_dir(release["base"])
    for p in R.PROMPTS + R.random_prompts(30, False, seed=1):  # non-legacy added tokens = the in-model ids
        assert nonlegacy.encode(p) == base.encode(p), p


def test_table_layout_encodes_as_its_release_layout(padded, release, tmp_path):
    """A vocabulary built from scratch (bare tokenizer.model) encodes exactly as the release layout the
    exporters write for it, and the library's writer gives the same pieces as sentencepiece's protobuf."""
    import shutil

    d = tmp_path / "bare"
    d.mkdir()
    shutil.copy(padded, d / "tokenizer.model")
    table = SpiritTokenizer.from_dir(d, expressive=True)
    assert table.source == "table"
    rel = SpiritTokenizer.from_dir(release["expressive"])
    for p in R.PROMPTS + R.EXPRESSIVE_PROMPTS + R.random_prompts(30, True, seed=2):
        assert table.encode(p) == rel.encode(p), p
    written = append_pieces(padded, release_pieces(table.layout.special_tokens(), 32000, 32768))
    assert read_pieces(written) == read_pieces(release["expressive"] / "tokenizer.model")
    assert read_pieces(written)[32000].type == USER_DEFINED


def test_directories_that_are_no_layout_are_errors(padded, release, tmp_path):
    import shutil

    d = tmp_path / "fillers_only"
    d.mkdir()
    shutil.copy(padded, d / "tokenizer.model")
    (d / "tokenizer.model").write_bytes(
        append_pieces(padded, [(f"[Madeuptoken{i}]", 0.0, USER_DEFINED) for i in range(32000, 32010)])
    )
    with pytest.raises(ValueError, match=r"10 \[MadeuptokenN\] filler pieces .* but no Spirit LM tokens"):
        SpiritTokenizer.from_dir(d)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "tokenizer.model").write_bytes(
        append_pieces(padded, [(t, 0.0, USER_DEFINED) for t in ["[Text]", "[Speech]", "[Hu0]"]])
    )
    with pytest.raises(ValueError, match=r"\(in_model\) lacks 500 token"):
        SpiritTokenizer.from_dir(partial)
    clash = tmp_path / "clash"
    shutil.copytree(release["base"], clash)
    cfg = json.loads((clash / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"]["40000"] = {"content": "[Text]"}
    (clash / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"\[Text\] is a piece of tokenizer.model \(id 32000\) and an added token"):
        SpiritTokenizer.from_dir(clash)
    with pytest.raises(FileNotFoundError, match=r"no tokenizer.model in .*found: tokenizer_config.json"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "tokenizer_config.json").write_text("{}")
        SpiritTokenizer.from_dir(tmp_path / "empty")


@pytest.mark.parametrize("variant", ["base", "expressive"])
def test_from_checkpoint_with_the_release_tokenizer(release, variant, tmp_path, monkeypatch):
    """A tiny LM with the release's 32512 / 32768 embedding rows, in a $SPIRITLM_CHECKPOINTS_DIR tree, runs
    the reference README's text example with only its import line changed."""
    import jax

    from spiritlm_jax.bundle import save_bundle
    from spiritlm_jax.model import LlamaConfig, init_params

    vocab = 32768 if variant == "expressive" else 32512
    cfg = LlamaConfig(vocab_size=vocab, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=32, max_seq_len=128)
    params = init_params(cfg, jax.random.PRNGKey(0))
    name = f"spirit-lm-{variant}-7b"
    save_bundle(tmp_path / "spiritlm_model" / name, params, cfg, tokenizer_src=release[variant])
    monkeypatch.setenv("SPIRITLM_CHECKPOINTS_DIR", str(tmp_path))

    # --- the reference's spiritlm/model/README.md, ported: only the first import differs ---
    from transformers import GenerationConfig

    from spiritlm_jax.inference.spiritlm import ContentType, GenerationInput, OutputModality, Spiritlm

    spirit_lm = Spiritlm(name)
    lm = spirit_lm
    assert lm.tokenizer.source == "in_model" and lm.layout.vocab_size == vocab
    assert lm.layout.expressive == (variant == "expressive")
    if variant == "base":  # one generation (one compilation at 32k rows) is enough for the CPU budget
        return
    out = spirit_lm.generate(
        output_modality=OutputModality.TEXT,
        interleaved_inputs=[
            GenerationInput(
                content="The largest country in the world is",
                content_type=ContentType.TEXT,
            )
        ],
        generation_config=GenerationConfig(
            temperature=0.9,
            top_p=0.95,
            max_new_tokens=50,
            do_sample=True,
        ),
    )
    # ---
    assert len(out) == 1 and out[0].content_type is ContentType.TEXT and isinstance(out[0].content, str)


# ----- export: what the reference loads, drives and decodes ------------------------------------------
def _reference_forbidden(modality: str, expressive: bool) -> list[int]:
    """The reference's banned ids (spiritlm/model/utils.py get_forbidden_tokens, its hard-coded ids)."""
    banned = [32000, 32001]
    if modality == "speech":
        return banned + list(range(32000))
    banned += list(range(32002, 32002 + 501))
    if expressive:
        banned += list(range(32503, 32503 + 64)) + list(range(32567, 32567 + 100))
    return banned


def _reference_decode(sp, ids: list[int]) -> str:
    """transformers 4.46's slow LlamaTokenizer.decode(skip_special_tokens=True, no clean-up) on a
    tokenizer with the Spirit LM tokens inside tokenizer.model: special ids dropped, the first piece's
    '▁' removed, SentencePiece's decode of the pieces (checked against 4.46 in tools/tokenizer_parity_446.py)."""
    pieces = [sp.id_to_piece(i) for i in ids if i not in (sp.unk_id(), sp.bos_id(), sp.eos_id())]
    if pieces and pieces[0].startswith("\u2581"):
        pieces[0] = pieces[0][1:]
    return sp.decode_pieces(pieces)


@pytest.mark.slow
def test_export_is_what_the_reference_loads_and_decodes(padded, tmp_path):
    """A training-run-like bundle (bare tokenizer.model: the layout table) -> llama_to_hf export ->
    transformers LlamaForCausalLM + the reference's tokenizer driven as the reference drives them (prompt
    string, encode, greedy generate with its banned ids, decode, slice len(prompt)) == SpiritLM in JAX:
    same prompt ids, continuation ids and decoded text for T->T, S->T and T->S."""
    import shutil

    import jax
    import sentencepiece as spm
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    from spiritlm_jax import SpiritLM
    from spiritlm_jax.bundle import save_bundle
    from spiritlm_jax.model import LlamaConfig, init_params
    from spiritlm_jax.model.decode import SamplingConfig, generate_tokens
    from tests.test_generation import RecordingVocoder
    from tools.convert_weights.llama_to_hf import export

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    shutil.copy(padded, tok_dir / "tokenizer.model")
    cfg = LlamaConfig(
        vocab_size=32512, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=128, dtype="float32"
    )
    params = init_params(cfg, jax.random.PRNGKey(3))
    head = np.asarray(params["lm_head"]["kernel"]) * 40.0  # well-separated greedy choices
    head[:, :300] *= 2.5  # favour the trained pieces (English) over the CJK padding pieces
    head[:, 32503:] = 0.0  # filler rows: never the argmax (a trained model never puts mass there)
    params["lm_head"]["kernel"] = jax.numpy.asarray(head)
    run = save_bundle(tmp_path / "run", params, cfg, tokenizer_src=tok_dir)
    out = export(run, tmp_path / "hf", dtype="float32")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["README.md", "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json"]
        + ["tokenizer.model", "tokenizer_config.json"]
    )
    assert "[MadeuptokenN]" in (out / "README.md").read_text()

    hf = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert sp.get_piece_size() == 32512 and sp.id_to_piece(32000) == "[Text]"
    lm = SpiritLM.from_checkpoint(run, dtype="float32")
    lm.vocoder = RecordingVocoder()

    cases = {
        "text": ["[Text]The cat sat on the", "[Text]numbers 12 and", "[Speech][Hu3][Hu77][Hu5][Hu400][Text]"],
        "speech": ["[Text]hello there[Speech]", "[Speech][Hu9][Hu8][Hu7]"],
    }
    counts = {"prompt_ids": 0, "continuation_ids": 0, "decoded": 0, "n": 0, "eos": 0}
    for modality, prompts in cases.items():
        n_new = 8 if modality == "text" else 12
        for prompt in prompts:
            ids = [1] + sp.encode(prompt)
            gen = hf.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                generation_config=GenerationConfig(max_new_tokens=n_new, do_sample=False),
                bad_words_ids=[[i] for i in _reference_forbidden(modality, False)],
                pad_token_id=-1,
            )[0].tolist()
            ref_new = gen[len(ids) :]
            ref_text = _reference_decode(sp, gen)[len(prompt) :].strip()

            ours_prompt = lm.tokenizer.encode(prompt)
            ours_new = generate_tokens(
                lm.model,
                lm.params,
                [ours_prompt],
                SamplingConfig(do_sample=False, max_new_tokens=n_new),
                eos_ids=[lm.tokenizer.eos_id],
                logit_mask=lm.allowed_tokens(modality),
            )[0]
            outs = lm.generate(prompt=prompt, output_modality=modality, max_new_tokens=n_new)
            ours_text = outs[0].content if modality == "text" else lm.vocoder.calls[-1][0]
            counts["n"] += 1
            counts["prompt_ids"] += ours_prompt == ids
            counts["continuation_ids"] += ours_new == ref_new
            counts["decoded"] += ours_text == ref_text
            counts["eos"] += ref_new[-1:] == [2]
    # transformers exempts EOS from the banned ids: the reference's speech output can end at EOS (here twice)
    assert counts == {"prompt_ids": 5, "continuation_ids": 5, "decoded": 5, "n": 5, "eos": 2}, counts
