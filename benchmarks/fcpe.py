"""FCPE pitch extraction speed: audio seconds per second, JAX port vs torchfcpe (the real shipped
weights on both sides, Spirit LM's decoding: local argmax, threshold 0.05, 50-1100 Hz, interpolation,
200 Hz output) in one run, plus the F0/voicing agreement on the benchmarked audio.

    python -m benchmarks.fcpe [--seconds 10] [--batch 1] [--iters 3]

The audio is real speech (tests/data/vm-intro.wav, resampled to 16 kHz, tiled to --seconds). JAX is
timed two ways after a warm-up call: `F0Extractor` (the library path: pads to a power-of-two bucket,
so one compile serves many lengths) and the same jitted function at the exact length. torchfcpe runs
on CUDA when available; it takes one waveform at a time, so a batch is a loop on its side.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def _time(fn, iters: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    import torch

    from spiritlm_jax.buckets import quarter_octave_bucket
    from spiritlm_jax.speech import fcpe
    from spiritlm_jax.speech.audio import load_audio
    from tests.fcpe_reference import converted_bundled, import_torchfcpe, spiritlm_f0

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = import_torchfcpe().spawn_bundled_infer_model(device=dev)
    cfg, params = converted_bundled()
    params = jax.device_put(params)
    speech = load_audio(Path(__file__).resolve().parents[1] / "tests" / "data" / "vm-intro.wav")
    n = int(args.seconds * 16000)
    wav = np.tile(speech, -(-n // len(speech)))[:n]
    wavs = [np.roll(wav, 4000 * i) for i in range(args.batch)]

    fx = fcpe.F0Extractor(params, cfg)
    exact = jax.jit(functools.partial(fcpe.fcpe_f0, cfg=cfg, opts=fx.opts))
    wav_j, n_j = jnp.asarray(np.stack(wavs)), jnp.full((args.batch,), n, jnp.int32)

    def torch_run():
        out = [spiritlm_f0(model, w) for w in wavs]
        if dev == "cuda":
            torch.cuda.synchronize()
        return out

    t_bucket = _time(lambda: fx.batch(wavs), args.iters)
    t_exact = _time(lambda: jax.block_until_ready(exact(params, wav_j, n_j)), args.iters)
    t_pt = _time(torch_run, args.iters)

    (f0, vuv), (f0_ref, vuv_ref) = fx(wavs[0]), spiritlm_f0(model, wavs[0])
    both = (vuv > 0) & (vuv_ref > 0)
    rel = float((np.abs(f0 - f0_ref) / f0_ref)[both].max())
    audio = args.seconds * args.batch
    bucket = quarter_octave_bucket(n, fcpe.BUCKET_MIN_SAMPLES)
    print(
        f"device: JAX {jax.devices()[0].device_kind}, torch {dev} ({torch.get_num_threads()} threads); "
        f"{audio:g} s of audio (batch {args.batch} x {args.seconds:g} s; bucket {bucket} samples)"
    )
    print(f"voicing agreement {(vuv == vuv_ref).mean():.4f}, max relative F0 error (voiced in both) {rel:.1e}")
    print(f"torchfcpe  {audio / t_pt:8.1f} audio-s/s ({t_pt * 1e3:.0f} ms)")
    for name, t in (("JAX exact ", t_exact), ("JAX bucket", t_bucket)):
        print(f"{name} {audio / t:8.1f} audio-s/s ({t * 1e3:.0f} ms); JAX/torchfcpe speed = {t_pt / t:.2f}x")


if __name__ == "__main__":
    main()
