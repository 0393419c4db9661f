"""Throughput of the LLaMA core: a training step and cached decoding, JAX vs transformers (PyTorch)
measured in the same run, same shapes, same dtype.

    python benchmarks/llama.py --shape 1b --mode train --batch 4 --seq 4096        # H100
    python benchmarks/llama.py --shape 7b --mode decode --batch 1 --new-tokens 256  # H100
    python benchmarks/llama.py --shape tiny --mode both                             # CPU smoke run

FLOP convention for MFU: training FLOPs per token = 6·N + 12·L·S·d, N = matmul parameters including
the LM head, L layers, S sequence length, d model width. Peak: dense bf16 of the device
(spiritlm_jax.training.metrics.PEAK_BF16_FLOPS); no MFU is printed on devices with unknown peak.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.llama import Llama, init_params
from spiritlm_jax.training.metrics import device_peak_flops, train_flops_per_token

SHAPES = {
    "tiny": dict(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=704),
    "1b": dict(vocab_size=32768, d_model=2048, n_layers=16, n_heads=16, n_kv_heads=16, d_ff=5632),
    "7b": dict(vocab_size=32768, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=11008),
}


def _time(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def jax_train(cfg: LlamaConfig, batch: int, seq: int, iters: int) -> float:
    """Seconds per step of the real training step (spiritlm_jax.training) on all local devices."""
    from spiritlm_jax.model.sharding import activation_sharding, make_mesh
    from spiritlm_jax.training.optim import OptimConfig, lr_schedule, make_optimizer
    from spiritlm_jax.training.step import init_state, jit_train_step, make_train_step, state_shardings

    model = Llama(cfg)
    ocfg = OptimConfig(lr=1e-4, warmup_steps=10)
    tx = make_optimizer(ocfg, 1000)
    mesh = make_mesh(data=1, fsdp=-1)
    shardings = state_shardings(model, tx, mesh)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (batch, seq + 1), dtype=np.int32)
    b = {
        "tokens": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": np.ones((batch, seq), np.int32),
        "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
        "loss_groups": np.zeros((batch, seq), np.int32),
    }
    with activation_sharding(mesh):
        holder = [init_state(model, tx, jax.random.PRNGKey(0), shardings)]
        step = jit_train_step(make_train_step(model, tx, lr_schedule(ocfg, 1000)), shardings, mesh)

        def run():
            holder[0], m = step(holder[0], b)
            m["loss"].block_until_ready()

        return _time(run, 2, iters)


def jax_decode(cfg: LlamaConfig, batch: int, prompt: int, new: int) -> float:
    """Seconds per generated token (whole batch), greedy, through the library's own decoding path
    (`generate_tokens`: prefill, then the sampling loop in one jitted while_loop over the KV cache).
    The prefill-only time (max_new_tokens=1) is subtracted, as for PyTorch."""
    from spiritlm_jax.model.decode import SamplingConfig, generate_tokens

    model = Llama(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: x.astype(cfg.dtype), params)  # serve bf16 weights
    prompts = np.random.default_rng(1).integers(0, cfg.vocab_size, (batch, prompt)).tolist()

    def gen(n):
        out = generate_tokens(model, params, prompts, SamplingConfig(do_sample=False, max_new_tokens=n))
        assert len(out[0]) == n  # no EOS given: every step runs

    t_all = _time(lambda: gen(new), 1, 3)
    t_pre = _time(lambda: gen(1), 1, 3)
    return (t_all - t_pre) / (new - 1)


def jax_decode_memory(cfg: LlamaConfig, batch: int, prompt: int, new: int) -> str:
    """The compiled sampling loop's temporaries against the K+V cache bytes (XLA memory analysis of
    the same programs `generate_tokens` runs for these shapes: bucketed prompt and new-token counts)."""
    from spiritlm_jax.buckets import pow2_bucket
    from spiritlm_jax.model.decode import PROMPT_BUCKET_MIN, decode_compiled

    p_len, n_new = pow2_bucket(prompt, PROMPT_BUCKET_MIN), pow2_bucket(new, 8)
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, cfg.dtype), params)
    prefill, loop = decode_compiled(Llama(cfg), params, batch, p_len, n_new)
    itemsize = np.dtype(cfg.dtype).itemsize if cfg.dtype != "bfloat16" else 2
    kv = 2 * cfg.n_layers * batch * (p_len + n_new) * cfg.n_kv_heads * cfg.dim_per_head * itemsize
    loop_tmp = loop.memory_analysis().temp_size_in_bytes
    pre_tmp = prefill.memory_analysis().temp_size_in_bytes
    return (
        f"decode loop temporaries {loop_tmp / 1e6:.2f} MB = {loop_tmp / kv:.1%} of the K+V cache "
        f"({kv / 1e6:.2f} MB); prefill temporaries {pre_tmp / 1e6:.2f} MB"
    )


def torch_model(cfg: LlamaConfig, dtype):
    import torch
    from transformers import LlamaConfig as HFConfig
    from transformers import LlamaForCausalLM

    hf = HFConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        rope_theta=cfg.rope_theta,
        max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=cfg.tie_embeddings,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return LlamaForCausalLM(hf).to(device=device, dtype=dtype), device


def torch_train(cfg: LlamaConfig, batch: int, seq: int, iters: int) -> float:
    import torch

    model, device = torch_model(cfg, torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")

    def run():
        with autocast:
            out = model(input_ids=tokens[:, :-1], labels=tokens[:, 1:].contiguous())
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return _time(run, 2, iters)


def torch_decode(cfg: LlamaConfig, batch: int, prompt: int, new: int) -> float:
    import torch

    model, device = torch_model(cfg, torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32)
    tokens = torch.randint(0, cfg.vocab_size, (batch, prompt), device=device)

    def gen(n):
        with torch.no_grad():
            model.generate(tokens, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        if device == "cuda":
            torch.cuda.synchronize()

    t_all = _time(lambda: gen(new), 1, 2)
    t_one = _time(lambda: gen(1), 1, 2)
    return (t_all - t_one) / (new - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=SHAPES, default="tiny")
    ap.add_argument("--mode", choices=["train", "decode", "both"], default="both")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--remat", default="none")
    ap.add_argument("--attention", default="xla")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--repeats", type=int, default=1, help="decode: JAX/PyTorch rounds; medians printed")
    args = ap.parse_args()

    cfg = LlamaConfig(
        **SHAPES[args.shape],
        dtype=args.dtype,
        remat=args.remat,
        attention=args.attention,
        max_seq_len=max(args.seq, args.prompt + args.new_tokens),
    )
    dev = jax.devices()[0]
    print(
        f"device: {dev.device_kind} x{jax.device_count()}; shape {args.shape} "
        f"({cfg.num_params() / 1e6:.1f}M params); dtype {args.dtype}"
    )
    peak = device_peak_flops(dev)
    if args.mode in ("train", "both"):
        toks = args.batch * args.seq
        t_jax = jax_train(cfg, args.batch, args.seq, args.iters)
        line = f"train  batch {args.batch} x seq {args.seq}: JAX {toks / t_jax:,.0f} tok/s"
        if peak:
            line += f" (MFU {train_flops_per_token(cfg, args.seq) * toks / t_jax / peak:.1%}, 6N+12LSd)"
        if not args.no_torch:
            t_pt = torch_train(cfg, args.batch, args.seq, args.iters)
            line += f"; PyTorch {toks / t_pt:,.0f} tok/s; JAX/PyTorch = {t_pt / t_jax:.2f}x"
        print(line, flush=True)
    if args.mode in ("decode", "both"):
        print(jax_decode_memory(cfg, args.batch, args.prompt, args.new_tokens), flush=True)
        jax_tps, pt_tps, ratios = [], [], []
        for r in range(args.repeats):  # JAX and PyTorch alternate, so load on a shared machine hits both
            t_jax = jax_decode(cfg, args.batch, args.prompt, args.new_tokens)
            jax_tps.append(args.batch / t_jax)
            line = f"decode batch {args.batch}, prompt {args.prompt}: JAX {jax_tps[-1]:,.1f} tok/s"
            if not args.no_torch:
                t_pt = torch_decode(cfg, args.batch, args.prompt, args.new_tokens)
                pt_tps.append(args.batch / t_pt)
                ratios.append(t_pt / t_jax)
                line += f"; PyTorch generate {pt_tps[-1]:,.1f} tok/s; JAX/PyTorch = {ratios[-1]:.2f}x"
            print(("" if args.repeats == 1 else f"[{r + 1}/{args.repeats}] ") + line, flush=True)
        if args.repeats > 1:
            line = f"median of {args.repeats}: JAX {np.median(jax_tps):,.1f} tok/s"
            if ratios:
                line += f"; PyTorch {np.median(pt_tps):,.1f} tok/s; JAX/PyTorch = {np.median(ratios):.2f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
