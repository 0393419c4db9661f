"""Real-time factor of the HiFi-GAN vocoder for 10 s of units: JAX vs the same generator in PyTorch
(transformers' SeamlessM4T HiFi-GAN with identical weights), measured in the same run.

    python -m benchmarks.vocoder [--seconds 10] [--channels 512]

RTF = synthesis time / audio duration (lower is better). The generator alone is timed (duration
prediction off), with the official-like ladder [5,4,4,4,2] (x640, 25 Hz units -> 16 kHz).
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
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    import torch
    from transformers import SeamlessM4TConfig
    from transformers.models.seamless_m4t.modeling_seamless_m4t import SeamlessM4TCodeHifiGan

    from spiritlm_jax.speech.hifigan import Generator, HifiGanConfig
    from tools.convert_weights.hifigan_from_pt import params_from_state_dict

    rates, kernels = [5, 4, 4, 4, 2], [11, 8, 8, 8, 4]
    hf_cfg = SeamlessM4TConfig(unit_embed_dim=128, lang_embed_dim=0, spkr_embed_dim=128, unit_hifi_gan_vocab_size=501,
                               vocoder_num_spkrs=4, upsample_rates=rates, upsample_kernel_sizes=kernels,
                               upsample_initial_channel=args.channels, resblock_kernel_sizes=[3, 7, 11],
                               resblock_dilation_sizes=[[1, 3, 5]] * 3)
    m = SeamlessM4TCodeHifiGan(hf_cfg).eval()
    cfg = HifiGanConfig(embedding_dim=128, num_speakers=4, upsample_rates=tuple(rates),
                        upsample_kernel_sizes=tuple(kernels), upsample_initial_channel=args.channels,
                        dur_kernel_size=hf_cfg.variance_predictor_kernel_size)
    sd = {}
    for k, v in m.state_dict().items():
        k = k.replace("hifi_gan.upsampler.", "ups.").replace("hifi_gan.", "").replace("unit_embedding.", "dict.")
        k = k.replace("speaker_embedding.", "spkr.").replace("dur_predictor.conv1.", "dur_predictor.conv1.0.")
        k = k.replace("dur_predictor.conv2.", "dur_predictor.conv2.0.")
        if not k.startswith("language_embedding"):
            sd[k] = v.float().numpy()
    params = params_from_state_dict(sd, cfg)["generator"]
    frames = int(args.seconds * 25)
    x = np.random.default_rng(0).normal(size=(1, frames, 256)).astype(np.float32)
    gen = jax.jit(lambda p, x: Generator(cfg).apply({"params": p}, x, jnp.ones(x.shape[:2], bool)))
    xj = jnp.asarray(x)
    gen(params, xj).block_until_ready()
    t = time.perf_counter()
    for _ in range(args.iters):
        out = gen(params, xj).block_until_ready()
    t_jax = (time.perf_counter() - t) / args.iters
    xt = torch.from_numpy(x.transpose(0, 2, 1))
    with torch.no_grad():
        ref = m.hifi_gan(xt)
        t = time.perf_counter()
        for _ in range(args.iters):
            m.hifi_gan(xt)
        t_pt = (time.perf_counter() - t) / args.iters
    diff = float(np.abs(np.asarray(out)[0] - ref.numpy()[0]).max())
    dur = frames * 640 / 16000
    print(f"device: {jax.devices()[0].device_kind}; {dur:.1f} s of audio, {args.channels} channels; max |diff| {diff:.2e}")
    print(f"JAX RTF {t_jax / dur:.4f} ({t_jax * 1000:.0f} ms); PyTorch RTF {t_pt / dur:.4f} ({t_pt * 1000:.0f} ms); "
          f"JAX speed-up {t_pt / t_jax:.2f}x")


if __name__ == "__main__":
    main()
