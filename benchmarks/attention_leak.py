"""Packed-row leak check: does any attention backend let one packed document see another?

Rows hold several documents (segment ids 1..n, then padding 0). For every backend this platform can
run, the script changes the queries/keys/values of document 2 in every row and measures how much the
outputs of the *other* documents move (must be ~0), and the error against the xla backend. A control,
`jax.nn.dot_product_attention(is_causal=True)` with no segment mask (what MaxText issue #4476 found
jax's public cuDNN path reduces to), must leak: it shows the check can fail.

    python benchmarks/attention_leak.py                       # this platform's backends
    python benchmarks/attention_leak.py --seq 4096 --heads 32 --kv-heads 8 --head-dim 128 --dtype bfloat16

Backends tried: xla everywhere; cudnn on GPU; splash on TPU (and on CPU in interpret mode, small
shapes only). Exit status 1 if a project backend leaks (control excluded), else 0. One line per
backend: `backend  leak=max|d out| on untouched documents  err_vs_xla=max|out - xla|  ok|LEAK`.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.model.attention import SplashBlocks, attention, target_platform

LEAK_THRESHOLD = 1e-3  # masked keys contribute exact zeros; real leaks move outputs by O(0.1)


def packed_segments(batch: int, seq: int, seed: int = 0) -> np.ndarray:
    """[B, T] segment ids: 3-5 documents of random odd lengths per row, the last row ending in padding."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(batch):
        n_docs = int(rng.integers(3, 6))
        cuts = np.sort(rng.choice(np.arange(1, seq - 1), n_docs - 1, replace=False))
        row = np.zeros(seq, np.int32)
        bounds = [0, *cuts.tolist(), seq - (7 if b == batch - 1 else 0)]
        for i in range(n_docs):
            row[bounds[i] : bounds[i + 1]] = i + 1
        rows.append(row)
    return np.stack(rows)


def _control(q, k, v, seg):
    del seg  # the point: segments are ignored
    impl = "cudnn" if target_platform() == "gpu" else None
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)


def check(backend: str, q, k, v, seg, blocks: SplashBlocks, ref=None) -> dict:
    """{"leak": max change of untouched documents, "err_vs_xla": max |out - ref|} for one backend."""
    if backend == "control":
        fn = jax.jit(lambda q, k, v: _control(q, k, v, seg))
    else:
        fn = jax.jit(lambda q, k, v: attention(q, k, v, seg, seg, backend=backend, splash_blocks=blocks))
    out = fn(q, k, v)
    doc2 = (seg == 2)[:, :, None, None]
    bump = jnp.asarray(doc2, q.dtype)
    out2 = fn(q + bump, k + bump, v + bump)
    untouched = ~np.asarray(doc2[:, :, 0, 0])
    diff = np.abs(np.asarray(out2, np.float32) - np.asarray(out, np.float32))[untouched]
    res = {"leak": float(diff.max())}
    if ref is not None:
        res["err_vs_xla"] = float(np.abs(np.asarray(out, np.float32) - np.asarray(ref, np.float32)).max())
    return res


def backends_for(platform: str) -> list[str]:
    return {"gpu": ["xla", "cudnn"], "tpu": ["xla", "splash"]}.get(platform, ["xla", "splash"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=None, help="default: 2048 on accelerators, 256 on CPU")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=None, help="default: 128 on accelerators, 32 on CPU")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on accelerators, float32 on CPU")
    args = ap.parse_args(argv)

    platform = target_platform()
    accel = platform in ("gpu", "tpu")
    seq = args.seq or (2048 if accel else 256)
    hd = args.head_dim or (128 if accel else 32)
    dtype = jnp.dtype(args.dtype or ("bfloat16" if accel else "float32"))
    blocks = SplashBlocks() if accel else SplashBlocks(128, 128, 128, 128, 128)
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    q = jax.random.normal(ks[0], (args.batch, seq, args.heads, hd), dtype)
    k = jax.random.normal(ks[1], (args.batch, seq, args.kv_heads, hd), dtype)
    v = jax.random.normal(ks[2], (args.batch, seq, args.kv_heads, hd), dtype)
    seg = jnp.asarray(packed_segments(args.batch, seq))

    print(f"attention leak check: {platform} ({jax.devices()[0].device_kind}), B={args.batch} T={seq} "
          f"heads {args.heads}/{args.kv_heads} head_dim {hd} {dtype.name}")  # fmt: skip
    ref = jax.jit(lambda q, k, v: attention(q, k, v, seg, seg, backend="xla"))(q, k, v)
    failed = []
    control_kv = (jnp.repeat(k, args.heads // args.kv_heads, 2), jnp.repeat(v, args.heads // args.kv_heads, 2))
    for name in [*backends_for(platform), "control"]:
        kk, vv = control_kv if name == "control" else (k, v)
        try:
            res = check(name, q, kk, vv, seg, blocks, ref)
        except Exception as e:  # a backend that cannot run here is reported, not fatal
            print(f"{name:8s} did not run: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            if name != "control":
                failed.append(name)
            continue
        leaked = res["leak"] > LEAK_THRESHOLD
        verdict = ("leaks, as expected" if leaked else "DID NOT LEAK: check is broken") if name == "control" else (
            "LEAK" if leaked else "ok"
        )  # fmt: skip
        print(f"{name:8s} leak={res['leak']:.3g}  err_vs_xla={res['err_vs_xla']:.3g}  {verdict}")
        if name != "control" and leaked:
            failed.append(name)
        if name == "control" and not leaked:
            failed.append("control")
    print("packed-row leak check:", "FAIL " + ", ".join(failed) if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
