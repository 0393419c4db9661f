"""HuBERT feature extraction speed: audio seconds encoded per second, JAX vs transformers' HubertModel
(same random weights, HuBERT-Base size, 25 Hz stack, 11 layers run) in one run.

    python -m benchmarks.hubert [--seconds 10] [--batch 1]
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
    args = ap.parse_args()
    import torch

    from spiritlm_jax.speech.hubert import STRIDE_640_25HZ, Hubert, HubertConfig
    from tests.test_hubert import hf_model, params_from_hf

    m = hf_model(STRIDE_640_25HZ, hidden=768, layers=11, heads=12, ffn=3072, pos_k=128, pos_g=16)
    cfg = HubertConfig(output_layer=11)
    params = params_from_hf(m, cfg)
    n = int(args.seconds * 16000)
    wav = np.random.default_rng(0).normal(scale=0.1, size=(args.batch, n)).astype(np.float32)
    fn = jax.jit(lambda p, w, l: Hubert(cfg).apply({"params": p}, w, l)[0])
    lens = jnp.full((args.batch,), n)
    out = fn(params, jnp.asarray(wav), lens).block_until_ready()
    t = time.perf_counter()
    for _ in range(args.iters):
        fn(params, jnp.asarray(wav), lens).block_until_ready()
    t_jax = (time.perf_counter() - t) / args.iters
    with torch.no_grad():
        ref = m(torch.from_numpy(wav)).last_hidden_state
        t = time.perf_counter()
        for _ in range(args.iters):
            m(torch.from_numpy(wav))
        t_pt = (time.perf_counter() - t) / args.iters
    audio = args.seconds * args.batch
    diff = float(np.abs(np.asarray(out) - ref.numpy()).max())
    print(f"device: {jax.devices()[0].device_kind}; {audio:.0f} s of audio (batch {args.batch}); max |diff| {diff:.1e}")
    print(f"JAX {audio / t_jax:.1f} audio-s/s; PyTorch {audio / t_pt:.1f} audio-s/s; JAX/PyTorch = {t_pt / t_jax:.2f}x")


if __name__ == "__main__":
    main()
