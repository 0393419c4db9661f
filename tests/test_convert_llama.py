"""Parity with transformers' LlamaForCausalLM through the converters, model directories, and errors.

Tolerance: fp32 everywhere, max |logit difference| <= 1e-4 (logits are O(1) with these random
weights; the two implementations differ only in summation order, ~1e-6 observed), on full sequences
and through KV-cache decoding. The export round trip only moves fp32 tensors (no arithmetic), so
transformers' logits before and after must agree to <= 1e-5.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import yaml
from transformers import LlamaConfig as HFConfig
from transformers import LlamaForCausalLM

from spiritlm_jax.bundle import load_extra, load_lm, load_pretrained, read_manifest, save_lm
from spiritlm_jax.model import init_cache
from tools.convert_weights import llama_from_hf
from tools.convert_weights.common import ConversionError
from tools.convert_weights.llama_from_gguf import load_gguf, unpermute_rope
from tools.convert_weights.llama_from_hf import convert, llama_config_from_hf
from tools.convert_weights.llama_to_hf import export

TOL = 1e-4
CONFIGS = {
    "mha_untied_1e4": dict(
        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False, rope_theta=1e4, vocab_size=256
    ),
    "gqa_tied_1e5": dict(
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e5, vocab_size=256
    ),
    "gqa_untied_vocab32768": dict(
        num_attention_heads=6,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        rope_theta=1e5,
        vocab_size=32768,
        hidden_size=48,
    ),
}


def hf_model(name, seed=0):
    kw = dict(
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        bos_token_id=5,
        eos_token_id=6,
    )
    kw.update(CONFIGS[name])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(HFConfig(**kw)).eval()
    with torch.no_grad():  # non-trivial norm scales so a mis-mapped norm would show
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


def rope_theta(config):
    """transformers 5 keeps theta in config.rope_parameters, 4.x in config.rope_theta."""
    return (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", None))


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


def _round_to_bf16(hf):
    """bf16 state dict (tied head dropped) and the reference model set to the same rounded weights."""
    sd = {
        k: v.to(torch.bfloat16)
        for k, v in hf.state_dict().items()
        if k != "lm_head.weight" or not hf.config.tie_word_embeddings
    }
    with torch.no_grad():
        for k, p in hf.named_parameters():
            p.copy_(sd.get(k, sd["model.embed_tokens.weight"]).float())
    return sd


def write_hf_dir(hf, d, fmt):
    """An HF directory in one of the layouts transformers has used."""
    if fmt == "safetensors":
        hf.save_pretrained(d)
    elif fmt == "safetensors_sharded":
        hf.save_pretrained(d, max_shard_size="20KB")
        assert (d / "model.safetensors.index.json").is_file()
    else:  # transformers 5 writes only safetensors: write the legacy .bin layouts by hand, in bf16
        hf.config.save_pretrained(d)
        sd = _round_to_bf16(hf)
        if fmt == "bin":
            torch.save(sd, d / "pytorch_model.bin")
        else:
            names = sorted(sd)
            weight_map = {}
            for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
                fn = f"pytorch_model-0000{i + 1}-of-00002.bin"
                torch.save({k: sd[k] for k in part}, d / fn)
                weight_map.update({k: fn for k in part})
            (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))


def jax_logits_full_and_cached(model, params, tokens, prefill=6):
    """Logits of the full forward pass, and of prefill + one-token KV-cache steps."""
    full = jax.jit(lambda p, t: model.apply({"params": p}, t))(params, jnp.asarray(tokens))
    step = jax.jit(lambda p, t, c: model.apply({"params": p}, t, cache=c))
    b, t = tokens.shape
    cache = init_cache(model.cfg, b, t + 3, dtype="float32")
    logits, cache = step(params, jnp.asarray(tokens[:, :prefill]), cache)
    outs = [logits]
    for i in range(prefill, t):
        logits, cache = step(params, jnp.asarray(tokens[:, i : i + 1]), cache)
        outs.append(logits)
    return np.asarray(full), np.concatenate(outs, axis=1)


@pytest.mark.parametrize(
    "name, fmt, dtype",
    [(n, "safetensors", "float32") for n in CONFIGS]
    + [
        ("gqa_tied_1e5", "safetensors_sharded", "float32"),
        ("mha_untied_1e4", "bin", "bfloat16"),
        ("gqa_tied_1e5", "bin_sharded", "bfloat16"),
    ],
)
def test_parity_full_and_cached(tmp_path, name, fmt, dtype):
    hf = hf_model(name)
    write_hf_dir(hf, tmp_path / "hf", fmt)
    convert(tmp_path / "hf", tmp_path / "jax", dtype=dtype, progress=False)
    model, params = load_pretrained(tmp_path / "jax", dtype="float32")  # fp32 compute
    assert model.cfg.param_dtype == dtype and all(x.dtype == jnp.dtype(dtype) for x in jax.tree.leaves(params))
    assert model.cfg.rope_theta == rope_theta(hf.config)
    tokens = np.random.default_rng(0).integers(0, hf.config.vocab_size, (2, 11))
    ref = hf_logits(hf, tokens)
    full, cached = jax_logits_full_and_cached(model, params, tokens)
    assert np.abs(full - ref).max() <= TOL
    assert np.abs(cached - ref).max() <= TOL


def test_export_round_trip(tmp_path):
    hf = hf_model("gqa_untied_vocab32768", seed=1)
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.model").write_bytes(b"sentencepiece stand-in")
    convert(tmp_path / "hf", tmp_path / "jax", progress=False)
    assert load_extra(tmp_path / "jax")["hf_config"]["vocab_size"] == 32768
    assert read_manifest(tmp_path / "jax").expressive is False  # unreadable stand-in tokenizer: BASE declared
    export(tmp_path / "jax", tmp_path / "back", dtype="float32", max_shard_gb=0.001)  # force sharding
    assert (tmp_path / "back" / "model.safetensors.index.json").is_file()
    assert not list((tmp_path / "back").glob("*.tmp"))
    assert not (tmp_path / "back" / "tokenizer.model").exists()  # a stand-in is no tokenizer: not exported
    cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert cfg["rope_theta"] == 1e5 and cfg["vocab_size"] == 32768 and cfg["tie_word_embeddings"] is False
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (5, 6)  # carried from the source config
    back = LlamaForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
    assert rope_theta(back.config) == 1e5
    tokens = np.random.default_rng(1).integers(0, 32768, (1, 9))
    assert np.abs(hf_logits(back, tokens) - hf_logits(hf, tokens)).max() <= 1e-5
    # and the exported directory imports again (unsharded this time, tied config)
    export(tmp_path / "jax", tmp_path / "back1", dtype="bfloat16")
    assert (tmp_path / "back1" / "model.safetensors").is_file()
    convert(tmp_path / "back1", tmp_path / "jax2", progress=False)


def test_export_tied_single_file(tmp_path):
    hf = hf_model("gqa_tied_1e5", seed=2)
    hf.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "jax", progress=False)
    export(tmp_path / "jax", tmp_path / "back", dtype="float32")
    back = LlamaForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
    assert back.config.tie_word_embeddings
    tokens = np.random.default_rng(2).integers(0, 256, (2, 7))
    assert np.abs(hf_logits(back, tokens) - hf_logits(hf, tokens)).max() <= 1e-5


# ----- GGUF: llama.cpp's q/k row permutation, written here from llama.cpp's convert script -------------


def llama_cpp_permute(w, n_heads):
    """convert_hf_to_gguf.py LlamaModel.permute: per head, half-split rows -> interleaved pairs."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llama_cpp_permute():
    w = np.arange(3 * 8 * 5, dtype=np.float32).reshape(3 * 8, 5)
    assert np.array_equal(unpermute_rope(llama_cpp_permute(w, 3), 3), w)
    # head 0, rows 0..7 = [x0..x3 | y0..y3] -> llama.cpp order x0 y0 x1 y1 ...
    assert llama_cpp_permute(w, 3)[:8, 0].tolist() == [0, 20, 5, 25, 10, 30, 15, 35]


def write_gguf(hf, path):
    """A float32 GGUF of `hf` laid out as llama.cpp's converter writes it (q/k rows permuted)."""
    import gguf

    c = hf.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(rope_theta(c))
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_bos_token_id(c.bos_token_id)
    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    sd = {k: v.float().numpy() for k, v in hf.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not c.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(c.num_hidden_layers):
        for ours, theirs in names.items():
            t = sd[f"model.layers.{i}.{ours}.weight"]
            if ours == "self_attn.q_proj":
                t = llama_cpp_permute(t, c.num_attention_heads)
            elif ours == "self_attn.k_proj":
                t = llama_cpp_permute(t, c.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{theirs}.weight", np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("name", ["gqa_tied_1e5", "mha_untied_1e4"])
def test_gguf_import_parity(tmp_path, name):
    from spiritlm_jax.model import Llama

    hf = hf_model(name, seed=3)
    write_gguf(hf, tmp_path / "m.gguf")
    cfg, params = load_gguf(tmp_path / "m.gguf")
    assert cfg.tie_embeddings == hf.config.tie_word_embeddings and cfg.n_kv_heads == hf.config.num_key_value_heads
    tokens = np.random.default_rng(3).integers(0, 256, (2, 9))
    full, cached = jax_logits_full_and_cached(Llama(cfg.replace(dtype="float32")), params, tokens, prefill=4)
    ref = hf_logits(hf, tokens)
    assert np.abs(full - ref).max() <= TOL
    assert np.abs(cached - ref).max() <= TOL


# ----- model directories --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("convert")
    hf = hf_model("gqa_untied_vocab32768", seed=4)
    hf.save_pretrained(d / "hf")
    convert(d / "hf", d / "jax", progress=False)
    return d / "jax"


def test_load_onto_a_mesh_and_cast(model_dir):
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    cfg, ref = load_lm(model_dir)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "tensor"))
    # shard every parameter's last axis over "tensor" where it divides, else replicate
    shardings = jax.tree.map(
        lambda x: NamedSharding(mesh, P(*([None] * (x.ndim - 1)), "tensor") if x.shape[-1] % 4 == 0 else P()), ref
    )
    _, params = load_lm(model_dir, shardings=shardings)
    assert params["lm_head"]["kernel"].sharding == shardings["lm_head"]["kernel"]
    assert params["lm_head"]["kernel"].sharding.spec == P(None, "tensor")
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref))
    )
    model, bf = load_pretrained(model_dir, param_dtype="bfloat16", dtype="float32")
    assert model.cfg.param_dtype == "bfloat16" and bf["embed"]["embedding"].dtype == jnp.bfloat16
    assert np.array_equal(
        np.asarray(bf["embed"]["embedding"]), np.asarray(ref["embed"]["embedding"].astype(jnp.bfloat16))
    )
    with pytest.raises(ValueError, match="structure"):
        load_lm(model_dir, shardings={"embed": None})


def test_config_params_mismatch_names_key_and_shapes(model_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    raw = yaml.safe_load((d / "config.yaml").read_text())
    raw["d_ff"] = 96
    (d / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"layers/mlp/down/kernel has shape \(2, 112, 48\), expected \(2, 96, 48\)"):
        load_lm(d)
    raw["d_ff"], raw["tie_embeddings"] = 112, True
    (d / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"unexpected parameter lm_head/kernel \(shape \(48, 32768\)\)"):
        load_lm(d)
    (d / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        load_lm(d)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nothing")
    with pytest.raises(ValueError, match="shape fields"):
        load_pretrained(model_dir, n_layers=3)
    with pytest.raises(ValueError, match="unknown LlamaConfig field"):
        load_pretrained(model_dir, dtpye="float32")


def test_save_model_checks_shapes_and_refuses_overwrite(model_dir, tmp_path):
    cfg, params = load_lm(model_dir)
    params = jax.tree.map(np.asarray, params)
    params["layers"]["attn"]["q"]["kernel"] = params["layers"]["attn"]["q"]["kernel"][:, :, :3]
    with pytest.raises(ValueError, match=r"layers/attn/q/kernel has shape \(2, 48, 3, 8\), expected \(2, 48, 6, 8\)"):
        save_lm(tmp_path / "x", params, cfg)
    with pytest.raises(FileExistsError, match="already exists"):
        convert(model_dir.parent / "hf", model_dir, progress=False)


# ----- bad inputs to the importer --------------------------------------------------------------------------


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
        (
            lambda sd: sd.__setitem__("model.layers.0.extra.weight", torch.zeros(2)),
            "unexpected tensor model.layers.0.extra.weight",
        ),
        (
            lambda sd: sd.__setitem__("model.layers.0.self_attn.k_proj.weight", torch.zeros(64, 64)),
            r"model.layers.0.self_attn.k_proj.weight has shape \(64, 64\), expected \(32, 64\)",
        ),
    ],
)
def test_bad_checkpoints_name_the_tensor(tmp_path, mutate, message):
    d = _state_dict_dir(tmp_path, mutate)
    with pytest.raises(ConversionError, match=message):
        convert(d, tmp_path / "out", progress=False)


def test_missing_files_and_unsupported_config(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text(json.dumps(hf_model("gqa_tied_1e5").config.to_dict()))
    with pytest.raises(FileNotFoundError, match=r"model.safetensors\[.index.json\]"):
        convert(tmp_path, tmp_path / "out")
    for bad, message in [
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}}, "rope_parameters"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"model_type": "mistral"}, "model_type"),
    ]:
        hf = {
            "vocab_size": 8,
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 8,
            **bad,
        }
        with pytest.raises(ConversionError, match=message):
            llama_config_from_hf(hf)
    # the command line reports the error (exit 2) instead of a traceback
    assert llama_from_hf.main(["--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope has no config.json" in capsys.readouterr().err
    assert llama_from_hf.main(["--hf-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2  # old flag
    assert "unknown option --hf-dir" in capsys.readouterr().err
    assert llama_from_hf.main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(k in help_text for k in ("src", "out", "dtype", "expressive"))
