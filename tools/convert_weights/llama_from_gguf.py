"""Import a LLaMA-architecture GGUF file (llama.cpp format, any quantisation gguf can dequantise).

    python tools/convert_weights/llama_from_gguf.py --src FILE.gguf --out DIR [--dtype float32|bfloat16]
        [--no-tokenizer]

Weights are dequantised to fp32 (then stored as --dtype). The tokenizer vocabulary inside the GGUF is
written as Hugging Face tokenizer files by transformers' GGUF tokenizer reader (--no-tokenizer skips
that, e.g. when transformers is not installed).

llama.cpp's converter permutes the rows of q and k for its interleaved RoPE; our RoPE is
transformers' half-split layout, so those rows are permuted back here. (Getting this wrong still
runs and produces fluent-looking nonsense; tests/test_smollm2.py compares against transformers'
own GGUF loader on real weights.)

The output is a bundle (spiritlm_jax.bundle): the LM directory, the tokenizer files and bundle.yaml (BASE).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.bundle import save_lm, write_bundle_manifest  # noqa: E402
from spiritlm_jax.model.config import LlamaConfig  # noqa: E402
from tools.convert_weights.common import ConversionError, converter_main, numpy_dtype  # noqa: E402
from tools.convert_weights.llama_from_hf import params_from_tensors  # noqa: E402

GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: per head, rows (pairs interleaved) -> (halves)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise ConversionError(f"GGUF metadata {key} is missing")
        return default
    return f.contents()


def gguf_config(reader) -> LlamaConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ConversionError(f"GGUF architecture is {arch!r}, expected 'llama'")
    scaling = _field(reader, "llama.rope.scaling.type", "none")
    if scaling != "none":
        raise ConversionError(f"GGUF llama.rope.scaling.type={scaling!r} is not supported (only the default RoPE)")
    names = {t.name for t in reader.tensors}
    n_heads = int(_field(reader, "llama.attention.head_count"))
    d = int(_field(reader, "llama.embedding_length"))
    head_dim = int(_field(reader, "llama.rope.dimension_count", d // n_heads))
    vocab = next(t for t in reader.tensors if t.name == "token_embd.weight").shape[-1]
    return LlamaConfig(
        vocab_size=int(vocab),
        d_model=d,
        n_layers=int(_field(reader, "llama.block_count")),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, "llama.attention.head_count_kv", n_heads)),
        head_dim=None if head_dim == d // n_heads else head_dim,
        d_ff=int(_field(reader, "llama.feed_forward_length")),
        norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        max_seq_len=int(_field(reader, "llama.context_length", 4096)),
        tie_embeddings="output.weight" not in names,
        dtype="bfloat16",
    )


def open_gguf(path: str | Path):
    """A gguf.GGUFReader (memory-maps the file; parsing the tokenizer arrays takes a few seconds)."""
    import gguf

    if not Path(path).is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    return gguf.GGUFReader(str(path))


def load_gguf(path_or_reader, dtype: str = "float32"):
    """(LlamaConfig, params): weights dequantised to fp32, stored as `dtype` numpy arrays."""
    import gguf

    reader = path_or_reader if isinstance(path_or_reader, gguf.GGUFReader) else open_gguf(path_or_reader)
    cfg = gguf_config(reader)
    by_hf = {}
    for t in reader.tensors:
        if t.name.startswith("blk."):
            _, i, rest = t.name.split(".", 2)
            if rest not in GGUF_TO_HF:
                raise ConversionError(f"unexpected GGUF tensor {t.name}")
            by_hf[f"model.layers.{i}.{GGUF_TO_HF[rest]}"] = t
        elif t.name in GGUF_TO_HF:
            by_hf[GGUF_TO_HF[t.name]] = t
        elif t.name != "rope_freqs.weight":
            raise ConversionError(f"unexpected GGUF tensor {t.name}")

    def get(name: str) -> np.ndarray:
        t = by_hf[name]
        try:
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        except NotImplementedError:
            raise ConversionError(f"GGUF tensor {t.name}: cannot dequantise type {t.tensor_type.name}") from None
        w = w.reshape(tuple(int(x) for x in reversed(t.shape)))
        if name.endswith("q_proj.weight"):
            w = unpermute_rope(w, cfg.n_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_rope(w, cfg.n_kv_heads)
        return w

    return cfg, params_from_tensors(cfg, set(by_hf), get, numpy_dtype(dtype))


def special_token_ids(reader) -> dict[str, int]:
    """{"bos_token_id": .., "eos_token_id": .., "pad_token_id": ..} from the GGUF tokenizer metadata."""
    out = {}
    for name in ("bos", "eos", "padding"):
        value = _field(reader, f"tokenizer.ggml.{name}_token_id", -1)
        if value != -1:
            out[f"{'pad' if name == 'padding' else name}_token_id"] = int(value)
    return out


@dataclasses.dataclass(frozen=True)
class FromGGUFArgs:
    src: str  # the .gguf file
    out: str  # output directory (a bundle: LM + tokenizer files + bundle.yaml)
    dtype: Literal["float32", "bfloat16"] = "float32"  # stored parameter dtype
    tokenizer: bool = True  # write Hugging Face tokenizer files (needs transformers); --no-tokenizer skips


def convert(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32", tokenizer: bool = True) -> Path:
    """GGUF file -> bundle directory (config.yaml, params/, extra.json, tokenizer files, bundle.yaml)."""
    out_dir = Path(out_dir)
    if (out_dir / "params").exists():
        raise FileExistsError(f"{out_dir / 'params'} already exists; choose a new output directory")
    reader = open_gguf(gguf_path)
    cfg, params = load_gguf(reader, dtype)
    extra = {
        "source": {"format": "gguf", "path": str(Path(gguf_path).absolute())},
        "hf_config": special_token_ids(reader),
    }
    del reader
    save_lm(out_dir, params, cfg.replace(param_dtype=dtype), extra=extra)
    if tokenizer:
        from transformers import AutoTokenizer

        gguf_path = Path(gguf_path)
        AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).save_pretrained(str(out_dir))
    write_bundle_manifest(out_dir)
    return out_dir


def main(argv=None) -> int:
    return converter_main(
        FromGGUFArgs, argv, __file__, __doc__, lambda a: convert(a.src, a.out, a.dtype, tokenizer=a.tokenizer)
    )


if __name__ == "__main__":
    sys.exit(main())
