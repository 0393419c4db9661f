"""HuBERT feature extraction speed: audio seconds encoded per second, JAX vs transformers' HubertModel
(same random weights, HuBERT-Base size: 768 wide, 12 heads, FFN 3072, pos conv 128/16, the 25 Hz
8-conv stack; the 11 layers that Spirit LM runs) in one run, plus the max |difference| of features.

    python -m benchmarks.hubert [--seconds 10] [--batch 1] [--iters 3] [--dtype float32|bfloat16]

Both sides get the same zero-padding-free batch; JAX is jitted and timed after one warm-up call.
On GPU, PyTorch runs on CUDA when available and `--dtype bfloat16` / `--attention cudnn` select our
bf16 + cuDNN path (the PyTorch side stays fp32: it is the reference).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--attention", default="xla", choices=("xla", "cudnn"))
    args = ap.parse_args()
    import torch

    from spiritlm_jax.speech.hubert import STRIDE_640_25HZ, Hubert, HubertConfig
    from tests.test_hubert import hf_model, params_from_hf

    m = hf_model(STRIDE_640_25HZ, hidden=768, layers=11, heads=12, ffn=3072, pos_k=128, pos_g=16)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = m.to(dev)
    cfg = HubertConfig(num_layers=11, output_layer=11, dtype=args.dtype, attention=args.attention)
    params = jax.device_put(params_from_hf(m.cpu(), cfg))
    m = m.to(dev)
    n = int(args.seconds * 16000)
    wav = np.random.default_rng(0).normal(scale=0.1, size=(args.batch, n)).astype(np.float32)
    wav[:, : len(wav[0]) // 2] *= 0.01  # not pure noise: a quiet half and a loud half
    fn = jax.jit(lambda p, w, n: Hubert(cfg).apply({"params": p}, w, n)[0])
    wav_j, lens = jnp.asarray(wav), jnp.full((args.batch,), n)
    out = fn(params, wav_j, lens).block_until_ready()
    t = time.perf_counter()
    for _ in range(args.iters):
        fn(params, wav_j, lens).block_until_ready()
    t_jax = (time.perf_counter() - t) / args.iters
    x = torch.from_numpy(wav).to(dev)
    with torch.no_grad():
        ref = m(x).last_hidden_state
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.iters):
            m(x)
        if dev == "cuda":
            torch.cuda.synchronize()
        t_pt = (time.perf_counter() - t) / args.iters
    audio = args.seconds * args.batch
    diff = float(np.abs(np.asarray(out, np.float32) - ref.cpu().numpy()).max())
    print(
        f"device: JAX {jax.devices()[0].device_kind}, torch {dev} ({torch.get_num_threads()} threads); "
        f"{audio:.0f} s of audio (batch {args.batch} x {args.seconds:g} s); JAX {args.dtype}/{args.attention}"
    )
    print(f"max |feature diff| {diff:.1e}")
    print(
        f"JAX {audio / t_jax:.1f} audio-s/s ({t_jax * 1e3:.0f} ms); PyTorch {audio / t_pt:.1f} audio-s/s "
        f"({t_pt * 1e3:.0f} ms); JAX/PyTorch speed = {t_pt / t_jax:.2f}x"
    )


if __name__ == "__main__":
    main()
