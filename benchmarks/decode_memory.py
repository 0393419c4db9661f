"""Per-chip memory of the decode loop on TPU, from the TPU compiler alone (no TPU needed), and the
HBM-bandwidth bound on tokens/s it implies.

The library's sampling loop (`spiritlm_jax.model.decode._decode`, what `generate_tokens` runs after
the prefill) is lowered with abstract, sharded arrays for a TPU topology
(`jax.experimental.topologies.get_topology_desc`) and compiled; XLA's memory analysis gives the
per-chip arguments (weights + KV cache), temporaries and outputs. Weights and cache are bf16. The
mesh is all chips on the `tensor` axis: weights split by heads / MLP hidden / vocabulary, the KV
cache split by kv heads (each chip holds its heads' slots for every sequence, so a step reads 1/n of
the weights and 1/n of the cache on each chip, with no weight gathering).

Bytes per step per chip = weights / n + the whole preallocated K+V cache / n (the loop attends over
every slot, masked, so a step at any position reads all of them); the bound is
batch x HBM bandwidth / bytes per step. It is a bound from bytes over bandwidth, not a measurement.

    /work/venvs/tpu/bin/python benchmarks/decode_memory.py                       # 7B, v5e:2x4 and v5p:2x2x1
    /work/venvs/tpu/bin/python benchmarks/decode_memory.py --shape tiny --batch 8  # a quick check
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.topologies import get_topology_desc
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.decode import SamplingConfig, _decode, _sampling_params
from spiritlm_jax.model.llama import Llama, init_cache
from spiritlm_jax.model.sharding import abstract_boxed_params, activation_sharding, make_mesh, param_shardings

SHAPES = {
    "tiny": dict(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=704),
    "7b": dict(vocab_size=32768, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=11008),
}
HBM_GBPS = {"v5e": 819, "v5p": 2765, "v4": 1200, "v6e": 1640}  # per chip, GB/s
HBM_GIB = {"v5e": 16, "v5p": 95, "v4": 32, "v6e": 32}


def compile_loop(cfg: LlamaConfig, mesh, batch: int, prompt: int, new: int):
    """The sampling loop for one bucket, compiled for `mesh` from shapes only; returns
    (compiled, weight bytes, cache bytes) with the bytes summed over all chips."""
    model = Llama(cfg)
    boxed = abstract_boxed_params(model)
    shard = param_shardings(boxed, mesh)
    params = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16, sharding=s),
        nn_unbox(boxed),
        shard,
    )
    rep = NamedSharding(mesh, P())
    kv_spec = NamedSharding(mesh, P(None, "tensor", None, None))  # [B, K, S, H]: split by kv heads
    cache = jax.eval_shape(lambda: init_cache(cfg, batch, prompt + new, dtype="bfloat16"))
    cache = {
        "k": tuple(jax.ShapeDtypeStruct(c.shape, c.dtype, sharding=kv_spec) for c in cache["k"]),
        "v": tuple(jax.ShapeDtypeStruct(c.shape, c.dtype, sharding=kv_spec) for c in cache["v"]),
        "segment_ids": jax.ShapeDtypeStruct(cache["segment_ids"].shape, jnp.int32, sharding=rep),
        "index": jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
    }

    def sds(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=rep)

    sparams = jax.eval_shape(lambda: _sampling_params(SamplingConfig(), cfg.vocab_size, None))
    sparams = jax.tree.map(lambda x: sds(x.shape, x.dtype), sparams)
    with activation_sharding(mesh):
        lowered = _decode.lower(
            model,
            params,
            cache,
            sds((batch, cfg.vocab_size), jnp.float32),
            sds((batch, prompt), jnp.int32),
            sds((batch,), jnp.int32),
            sds((2,), jnp.uint32),
            sparams,
            sds((1,), jnp.int32),
            new,
        )
        compiled = lowered.compile()
    weight_bytes = sum(int(np.prod(x.shape)) * 2 for x in jax.tree.leaves(params))
    cache_bytes = sum(int(np.prod(c.shape)) * 2 for c in cache["k"] + cache["v"])
    return compiled, weight_bytes, cache_bytes


def nn_unbox(tree):
    import flax.linen as nn

    return nn.unbox(tree)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=SHAPES, default="7b")
    ap.add_argument("--topologies", nargs="+", default=["v5e:2x4", "v5p:2x2x1"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32, 128])
    ap.add_argument("--context", type=int, default=4096, help="cache slots: prompt bucket + new-token bucket")
    ap.add_argument("--new-tokens", type=int, default=2048)
    args = ap.parse_args()
    cfg = LlamaConfig(**SHAPES[args.shape], param_dtype="bfloat16", dtype="bfloat16", max_seq_len=args.context)
    prompt = args.context - args.new_tokens
    print(
        f"{args.shape}: {cfg.num_params() / 1e9:.2f}B params, bf16 weights and KV cache, "
        f"context {args.context} (prompt bucket {prompt} + {args.new_tokens} new); "
        "mesh: all chips on `tensor`, KV cache split by kv heads"
    )
    print(
        "| topology | batch | args GiB/chip | temps GiB/chip | total GiB/chip (HBM) "
        "| weights + cache read/step/chip GB | bound tok/s (HBM bandwidth) | compile s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for topo_name in args.topologies:
        devices = get_topology_desc(platform="tpu", topology_name=topo_name).devices
        n = len(devices)
        mesh = make_mesh(data=1, fsdp=1, tensor=n, devices=devices)
        gen = topo_name.split(":")[0]
        for batch in args.batch:
            t = time.perf_counter()
            try:
                compiled, w_bytes, c_bytes = compile_loop(cfg, mesh, batch, prompt, args.new_tokens)
            except Exception as e:  # the TPU compiler refuses programs that do not fit in HBM
                msg = str(e).strip().splitlines()[0][:160]
                print(f"| {topo_name} ({n} chips) | {batch} | — | — | does not compile: {msg} | — | — | — |")
                continue
            secs = time.perf_counter() - t
            m = compiled.memory_analysis()
            total = m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            step_bytes = (w_bytes + c_bytes) / n
            bound = batch * HBM_GBPS[gen] * 1e9 / step_bytes
            print(
                f"| {topo_name} ({n} chips) | {batch} | {m.argument_size_in_bytes / 2**30:.2f} "
                f"| {m.temp_size_in_bytes / 2**30:.2f} | {total / 2**30:.2f} ({HBM_GIB[gen]}) "
                f"| {w_bytes / n / 1e9:.2f} + {c_bytes / n / 1e9:.2f} | {bound:,.0f} | {secs:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
