"""Export a spiritlm_jax model (model directory or training run) to a Hugging Face Llama directory.

    python tools/convert_weights/llama_to_hf.py --src DIR --out DIR [--dtype bfloat16|float32] [--max-shard-gb 5]

Writes a complete Hugging Face directory that transformers and Meta's reference Spirit LM code load
and decode: config.json (LlamaForCausalLM, rope_theta, vocabulary, tie flag, head_dim, eps),
generation_config.json, model.safetensors (sharded with an index above --max-shard-gb), the tokenizer
in the release's layout (Spirit LM tokens as pieces inside tokenizer.model, [MadeuptokenN] fillers up
to the embedding size, tokenizer_config.json, special_tokens_map.json; no added-token files) and a
README.md model card. `--tree DIR` also lays the directory out as the reference's checkpoint tree,
DIR/spiritlm_model/spirit-lm-{base,expressive}-7b/, so `Spiritlm("spirit-lm-base-7b")` finds it with
SPIRITLM_CHECKPOINTS_DIR=DIR (the speech components are not exported: they stay in spiritlm_jax's format).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Literal, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.bundle import MANIFEST, TOKENIZER_FILES, load_extra, load_lm, load_text_tokenizer, read_manifest  # noqa: E402
from spiritlm_jax.bundle.hf_export import (  # noqa: E402
    TREE_NAMES,
    write_generation_config,
    write_model_card,
    write_tokenizer,
)
from spiritlm_jax.model.config import LlamaConfig  # noqa: E402
from tools.convert_weights.common import converter_main  # noqa: E402
from tools.convert_weights.llama_from_hf import hf_tensor_specs  # noqa: E402

TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def hf_config(cfg: LlamaConfig, torch_dtype: str, source: dict | None = None, tokens: dict | None = None) -> dict:
    """config.json for transformers' LlamaForCausalLM (4.x and 5.x keys). Special token ids: the
    tokenizer's (`tokens`), else the imported source's config (`source`, saved in extra.json), else LLaMA-2's."""
    out = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.dim_per_head,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # transformers >= 5
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": torch_dtype,
    }
    out.update({k: v for k, v in (source or {}).items() if k in TOKEN_ID_KEYS})
    out.update({k: v for k, v in (tokens or {}).items() if k in TOKEN_ID_KEYS and v is not None})
    return out


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def hf_tensors(cfg: LlamaConfig, params):
    """Yield (HF name, HF-layout fp32 array) one tensor at a time, inverting the import transforms."""
    for name, (shape, path, _) in hf_tensor_specs(cfg).items():
        if path[0] == "layers":
            w = np.asarray(_get(params, path[:-1])[path[-1]], np.float32)  # one layer's slice
        else:
            w = np.asarray(_get(params, path), np.float32)
        if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            w = w.reshape(w.shape[0], -1).T
        elif name.endswith("o_proj.weight"):
            w = w.reshape(-1, w.shape[-1]).T
        elif name.endswith(("gate_proj.weight", "up_proj.weight", "down_proj.weight")) or name == "lm_head.weight":
            w = w.T
        assert w.shape == shape, (name, w.shape, shape)
        yield name, np.array(w, dtype=np.float32, order="C")  # writable copy for torch.from_numpy


def export(
    checkpoint: str | Path,
    out_dir: str | Path,
    dtype: str = "bfloat16",
    max_shard_gb: float = 5.0,
    tree: Optional[str | Path] = None,
) -> Path:
    """Model directory or training run -> a complete HF directory (see the module docstring); shards are
    written as they fill (host memory: the params plus one shard). With `tree`, the directory is
    <tree>/spiritlm_model/spirit-lm-{base,expressive}-7b/ and `out_dir` is ignored when None."""
    import torch
    from safetensors.torch import save_file

    src = Path(checkpoint)
    tok_dir = src / read_manifest(src).tokenizer if (src / MANIFEST).is_file() else src
    try:
        tok = load_text_tokenizer(tok_dir)
    except (FileNotFoundError, ValueError) as e:
        tok = None
        print(
            f"warning: {src}: no Spirit LM tokenizer ({e}); writing weights and config, and copying the "
            "source's other tokenizer files as they are (the reference decodes only with tokenizer.model)",
            file=sys.stderr,
        )
    if tree is not None and tok is None:
        raise ValueError("--tree needs the model's tokenizer (its name says BASE or EXPRESSIVE)")
    if tree is not None:
        out = Path(tree) / "spiritlm_model" / TREE_NAMES[tok.layout.expressive]
    elif out_dir is None:
        raise ValueError("give --out or --tree")
    else:
        out = Path(out_dir)
    if (out / "config.json").exists():
        raise FileExistsError(f"{out / 'config.json'} already exists; choose a new output directory")
    cfg, params = load_lm(checkpoint)
    if tok is not None and cfg.vocab_size < tok.vocab_size:
        raise ValueError(f"the model has {cfg.vocab_size} embedding rows, its tokenizer needs {tok.vocab_size}")
    out.mkdir(parents=True, exist_ok=True)
    tdtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    written: list[tuple[Path, list[str]]] = []  # (temporary file, tensor names)
    cur, size, total, limit = {}, 0, 0, max_shard_gb * 1e9

    def flush():
        path = out / f"shard-{len(written):05d}.safetensors.tmp"
        save_file(cur, str(path), metadata={"format": "pt"})
        written.append((path, list(cur)))

    for name, w in hf_tensors(cfg, params):
        t = torch.from_numpy(w).to(tdtype)
        nbytes = t.numel() * t.element_size()
        if cur and size + nbytes > limit:
            flush()
            cur, size = {}, 0
        cur[name] = t
        size += nbytes
        total += nbytes
    flush()
    if len(written) == 1:
        written[0][0].rename(out / "model.safetensors")
    else:
        weight_map = {}
        for i, (path, names) in enumerate(written):
            fn = f"model-{i + 1:05d}-of-{len(written):05d}.safetensors"
            path.rename(out / fn)
            weight_map.update({nm: fn for nm in names})
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    source = load_extra(checkpoint).get("hf_config")
    ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id} if tok is not None else None
    (out / "config.json").write_text(json.dumps(hf_config(cfg, dtype, source, ids), indent=2))
    if tok is None:  # not a Spirit LM tokenizer (e.g. SmolLM2's tokenizer.json): copied as it is
        for name in TOKENIZER_FILES:
            if (tok_dir / name).is_file() and name != "tokenizer.model":
                shutil.copy(tok_dir / name, out / name)
        return out
    write_generation_config(tok, out)
    write_tokenizer(tok, out, vocab_size=cfg.vocab_size, max_len=cfg.max_seq_len)
    summary = {
        "layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "heads": f"{cfg.n_heads} ({cfg.n_kv_heads} kv)",
        "context": cfg.max_seq_len,
        "rope_theta": cfg.rope_theta,
        "vocab_size": cfg.vocab_size,
        "dtype": dtype,
    }
    provenance = {"source": str(src.absolute()), "tokenizer": f"{tok_dir.absolute()} ({tok.source})"}
    if (src / "summary.json").is_file():  # a training run
        run = json.loads((src / "summary.json").read_text())
        provenance.update({k: run[k] for k in ("steps", "final") if k in run})
    write_model_card(out, tok, src, summary, provenance)
    return out


@dataclasses.dataclass(frozen=True)
class ToHFArgs:
    src: str  # model directory or training run directory
    out: Optional[str] = None  # output Hugging Face directory
    tree: Optional[str] = None  # or: a $SPIRITLM_CHECKPOINTS_DIR tree (spiritlm_model/spirit-lm-*-7b/)
    dtype: Literal["bfloat16", "float32"] = "bfloat16"  # dtype of the written safetensors
    max_shard_gb: float = 5.0  # safetensors shard size limit (GB)


def main(argv=None) -> int:
    return converter_main(
        ToHFArgs, argv, __file__, __doc__, lambda a: export(a.src, a.out, a.dtype, a.max_shard_gb, a.tree)
    )


if __name__ == "__main__":
    sys.exit(main())
