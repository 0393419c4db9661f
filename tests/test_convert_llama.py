"""Parity with transformers' LlamaForCausalLM through the converters, and converter errors.

Tolerance: fp32 everywhere, max |logit difference| <= 1e-4 (logits are O(1); the two
implementations differ only in summation order), on full sequences and through KV-cache decoding.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import LlamaConfig as HFConfig, LlamaForCausalLM

from spiritlm_jax.model import init_cache, load_pretrained
from tools.convert_weights.llama_from_hf import convert
from tools.convert_weights.llama_to_hf import export

CONFIGS = {
    "mha_untied_1e4": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False, rope_theta=1e4,
                           vocab_size=256),
    "gqa_tied_1e5": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e5,
                         vocab_size=256),
    "gqa_untied_vocab32768": dict(num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False,
                                  rope_theta=1e5, vocab_size=32768, hidden_size=48),
}


def hf_model(name, seed=0):
    kw = dict(hidden_size=64, intermediate_size=112, num_hidden_layers=2, max_position_embeddings=128,
              rms_norm_eps=1e-5)
    kw.update(CONFIGS[name])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(HFConfig(**kw)).eval()
    with torch.no_grad():  # non-trivial norm scales so a mis-mapped norm would show
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _rewrite_as_sharded_bin(d, hf):
    (d / "model.safetensors").unlink()
    sd = {k: v.to(torch.bfloat16) for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    names = sorted(sd)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        fn = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save({k: sd[k] for k in part}, d / fn)
        weight_map.update({k: fn for k in part})
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with torch.no_grad():  # the reference must see the same bf16-rounded weights
        for k, p in hf.named_parameters():
            p.copy_(sd.get(k, sd["model.embed_tokens.weight"]).float())


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


@pytest.mark.parametrize("name, fmt", [(n, "safetensors") for n in CONFIGS] + [("gqa_tied_1e5", "bin_sharded")])
def test_parity_full_and_cached(tmp_path, name, fmt):
    hf = hf_model(name)
    hf.save_pretrained(tmp_path / "hf")
    if fmt == "bin_sharded":  # transformers 5 only writes safetensors: write the legacy layout by hand
        _rewrite_as_sharded_bin(tmp_path / "hf", hf)
    convert(tmp_path / "hf", tmp_path / "jax", progress=False)
    model, params = load_pretrained(tmp_path / "jax", dtype="float32")
    tokens = np.random.default_rng(0).integers(0, hf.config.vocab_size, (2, 11))
    ref = hf_logits(hf, tokens)
    full = np.asarray(model.apply({"params": params}, jnp.asarray(tokens)))
    assert np.abs(full - ref).max() <= 1e-4
    cache = init_cache(model.cfg, 2, 16, dtype="float32")
    outs = []
    logits, cache = model.apply({"params": params}, jnp.asarray(tokens[:, :6]), cache=cache)
    outs.append(logits)
    for t in range(6, 11):
        logits, cache = model.apply({"params": params}, jnp.asarray(tokens[:, t:t + 1]), cache=cache)
        outs.append(logits)
    assert np.abs(np.concatenate(outs, 1) - ref).max() <= 1e-4


def test_export_round_trip(tmp_path):
    hf = hf_model("gqa_untied_vocab32768", seed=1)
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.model").write_bytes(b"sentencepiece stand-in")
    convert(tmp_path / "hf", tmp_path / "jax", progress=False)
    export(tmp_path / "jax", tmp_path / "back", dtype="float32", max_shard_gb=0.001)  # force sharding
    assert (tmp_path / "back" / "model.safetensors.index.json").is_file()
    assert (tmp_path / "back" / "tokenizer.model").read_bytes() == b"sentencepiece stand-in"
    cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert cfg["rope_theta"] == 1e5 and cfg["vocab_size"] == 32768 and cfg["tie_word_embeddings"] is False
    back = LlamaForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
    tokens = np.random.default_rng(1).integers(0, 32768, (1, 9))
    assert np.abs(hf_logits(back, tokens) - hf_logits(hf, tokens)).max() <= 1e-5


def _state_dict_dir(tmp_path, mutate):
    from safetensors.torch import save_file

    hf = hf_model("gqa_tied_1e5")
    hf.save_pretrained(tmp_path / "hf")
    sd = {k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    mutate(sd)
    save_file(sd, str(tmp_path / "hf" / "model.safetensors"))
    return tmp_path / "hf"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda sd: sd.pop("model.layers.1.mlp.up_proj.weight"), "missing tensor model.layers.1.mlp.up_proj.weight"),
        (lambda sd: sd.__setitem__("model.layers.0.extra.weight", torch.zeros(2)), "unexpected tensor model.layers.0.extra.weight"),
        (lambda sd: sd.__setitem__("model.layers.0.self_attn.k_proj.weight", torch.zeros(64, 64)),
         r"model.layers.0.self_attn.k_proj.weight has shape \(64, 64\), expected \(32, 64\)"),
    ],
)
def test_bad_checkpoints_name_the_tensor(tmp_path, mutate, message):
    from tools.convert_weights.llama_from_hf import ConversionError

    d = _state_dict_dir(tmp_path, mutate)
    with pytest.raises(ConversionError, match=message):
        convert(d, tmp_path / "out", progress=False)


def test_missing_files_and_unsupported_config(tmp_path):
    from tools.convert_weights.llama_from_hf import ConversionError, llama_config_from_hf

    with pytest.raises(FileNotFoundError, match="config.json"):
        convert(tmp_path, tmp_path / "out")
    with pytest.raises(ConversionError, match="rope_scaling"):
        llama_config_from_hf({"rope_scaling": {"type": "linear", "factor": 2.0}})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nothing")
