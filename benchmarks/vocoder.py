"""Real-time factor of the HiFi-GAN unit vocoder: JAX vs the same generator in PyTorch, same run.

    python -m benchmarks.vocoder [--seconds 10] [--channels 512] [--iters 3]

Config (official-like Spirit LM BASE shape; the released config.json is not available offline):
501 HuBERT units, embedding 128, 4 speakers, upsample [5,4,4,4,2] x kernels [11,8,8,8,4] (x640: 25 Hz
units -> 16 kHz), 512 channels, ResBlock1 kernels [3,7,11] with dilations [1,3,5], duration predictor
(hidden 128, kernel 3). The PyTorch side is transformers' SeamlessM4TCodeHifiGan with the same weights
(its language embedding has 0 channels, so the generator input is [units, speaker] on both sides; no
global style embedding, which only widens conv_pre's input).

Two measurements, each JAX vs PyTorch:
  generator   250 frames (10 s) of features -> audio, the generator alone
  vocode      250 HuBERT units -> durations -> repeated -> generator (Vocoder.vocode vs the
              SeamlessM4T forward); RTF is per second of the audio the durations produce
RTF = synthesis time / audio duration (lower is better); JAX compile time is excluded (warm-up call).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def timed(fn, iters):
    fn()  # warm-up (compilation)
    t = time.perf_counter()
    for _ in range(iters):
        out = fn()
    return (time.perf_counter() - t) / iters, out


def torch_best(fn, iters):
    """PyTorch at its default thread count and at 1 thread (on a shared CPU, OpenMP oversubscription can
    make more threads slower): {threads: seconds}, and the last output."""
    import torch

    times, default = {}, torch.get_num_threads()
    with torch.no_grad():
        for n in sorted({default, 1}, reverse=True):
            torch.set_num_threads(n)
            times[n], out = timed(fn, iters)
    torch.set_num_threads(default)
    return times, out


def report(what, dur, t_jax, t_pt: dict, diff):
    best = min(t_pt.values())
    pt = "  ".join(f"{n} thr {t * 1e3:.0f} ms (RTF {t / dur:.4f})" for n, t in t_pt.items())
    print(
        f"{what:9s} {dur:5.1f} s audio: JAX {t_jax * 1e3:.0f} ms (RTF {t_jax / dur:.4f})  PyTorch {pt}  "
        f"JAX speed-up vs best PyTorch {best / t_jax:.2f}x  max|diff| {diff:.1e}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    import torch
    from transformers import SeamlessM4TConfig
    from transformers.models.seamless_m4t.modeling_seamless_m4t import SeamlessM4TCodeHifiGan

    from spiritlm_jax.speech.hifigan import DurPredictorConfig, Generator, HifiGanConfig
    from spiritlm_jax.speech.vocoder import Vocoder
    from tools.convert_weights.hifigan_from_pt import params_from_state_dict

    rates, kernels = [5, 4, 4, 4, 2], [11, 8, 8, 8, 4]
    hf_cfg = SeamlessM4TConfig(
        unit_embed_dim=128,
        lang_embed_dim=0,
        spkr_embed_dim=128,
        unit_hifi_gan_vocab_size=501,
        vocoder_num_spkrs=4,
        upsample_rates=rates,
        upsample_kernel_sizes=kernels,
        upsample_initial_channel=args.channels,
        resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3,
        variance_predictor_kernel_size=3,
    )
    torch.manual_seed(0)
    m = SeamlessM4TCodeHifiGan(hf_cfg).eval()
    torch.set_flush_denormal(True)  # as XLA does; default-init weights otherwise make PyTorch ~7x slower
    with torch.no_grad():  # trained-like scales: unit-variance embeddings, 1/sqrt(fan-in) weights
        for name, p in m.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if name.endswith("ln1.weight") or name.endswith("ln2.weight") else 0.0)
            else:
                p.normal_(0, 1.0 if "embedding" in name else 1.0 / p[0].numel() ** 0.5)
        m.dur_predictor.proj.bias.fill_(0.5)  # ~1.7 frames per unit on average, as deduplicated units have
    cfg = HifiGanConfig(
        embedding_dim=128,
        num_speakers=4,
        multistyle=False,
        upsample_rates=tuple(rates),
        upsample_kernel_sizes=tuple(kernels),
        upsample_initial_channel=args.channels,
        dur_predictor_params=DurPredictorConfig(128, 128, 3, 0.0),
    )
    sd = {}
    for k, v in m.state_dict().items():
        k = k.replace("hifi_gan.upsampler.", "ups.").replace("hifi_gan.", "").replace("unit_embedding.", "dict.")
        k = k.replace("speaker_embedding.", "spkr.").replace("dur_predictor.conv1.", "dur_predictor.conv1.0.")
        k = k.replace("dur_predictor.conv2.", "dur_predictor.conv2.0.")
        if not k.startswith("language_embedding"):
            sd[k] = v.float().numpy()
    params = params_from_state_dict(sd, cfg)
    frames = int(round(args.seconds * 25))
    print(
        f"device: {jax.devices()[0].device_kind} (JAX {jax.__version__}); torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; {args.channels} channels, x{cfg.hop}, {frames} frames"
    )

    # generator alone
    x = np.random.default_rng(0).normal(size=(1, frames, cfg.model_in_dim)).astype(np.float32)
    gen = jax.jit(lambda p, x: Generator(cfg).apply({"params": p}, x, jnp.ones(x.shape[:2], bool)))
    xj = jnp.asarray(x)
    t_jax, out = timed(lambda: gen(params["generator"], xj).block_until_ready(), args.iters)
    xt = torch.from_numpy(x.transpose(0, 2, 1))
    t_pt, ref = torch_best(lambda: m.hifi_gan(xt), args.iters)
    diff = float(np.abs(np.asarray(out)[0] - ref.numpy()[0]).max())
    report("generator", frames * cfg.hop / cfg.sampling_rate, t_jax, t_pt, diff)

    # full path: units -> durations -> generator
    voc = Vocoder(params, cfg)
    units = np.random.default_rng(1).integers(0, 501, frames)
    t_jax, audio = timed(lambda: voc.vocode(units, speaker=1), args.iters)
    ids = torch.from_numpy(units)[None]
    t_pt, (ref, _) = torch_best(lambda: m(ids, torch.tensor([[1]]), torch.tensor([[0]])), args.iters)
    ref = ref.numpy().reshape(-1)
    diff = float(np.abs(audio - ref).max()) if audio.shape == ref.shape else float("nan")
    report("vocode", audio.size / cfg.sampling_rate, t_jax, t_pt, diff)


if __name__ == "__main__":
    main()
