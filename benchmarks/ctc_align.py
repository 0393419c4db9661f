"""CTC forced-alignment speed (audio-seconds aligned per second): wav2vec2 CTC emissions (random
weights in the shape of a real model) + the jitted Viterbi, after a warm-up call.

    python benchmarks/ctc_align.py [--model base|mms-300m] [--seconds 10] [--batch 4] [--repeat 2]

`base`: wav2vec2-base layout (12 x 768, group-norm extractor, post-LN); `mms-300m`: the MMS aligner's
shape (24 x 1024, layer-norm extractor with conv bias, stable-layer-norm pre-LN), 28 labels + blank.
Random weights give meaningless spans but the same compute as a converted model. Also times the
Viterbi alone on [batch, T frames, 32 labels] emissions, and transformers' Wav2Vec2ForCTC emissions on
the same batch (PyTorch CPU/GPU, the ratio printed; `--no-torch` skips it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spiritlm_jax.alignment.ctc import CTCAligner, ctc_viterbi  # noqa: E402
from spiritlm_jax.speech.hubert import STANDARD_50HZ, HubertConfig  # noqa: E402
from spiritlm_jax.speech.wav2vec2 import Wav2Vec2CTCConfig, Wav2Vec2ForCTC  # noqa: E402

LABELS = ("<blank>",) + tuple("aiensotrmklduyhgbpwcvjzfqx'") + ("|",)
MODELS = {
    "base": dict(encoder=HubertConfig(conv_layers=STANDARD_50HZ, output_layer=12), stable_layer_norm=False),
    "mms-300m": dict(
        encoder=HubertConfig(
            conv_layers=STANDARD_50HZ, hidden=1024, num_layers=24, num_heads=16, ffn=4096, output_layer=24
        ),  # fmt: skip
        stable_layer_norm=True,
        conv_bias=True,
    ),
}


def torch_emissions(cfg: Wav2Vec2CTCConfig, items, repeat: int, audio_s: float, sec_jax: float) -> None:
    """transformers' Wav2Vec2ForCTC (random weights, same shape) on the same batch: log-softmax
    emissions only, the part that dominates; printed as a ratio to the JAX aligner's whole call."""
    import torch
    from transformers import Wav2Vec2Config
    from transformers import Wav2Vec2ForCTC as TorchCTC

    enc = cfg.encoder
    hf = Wav2Vec2Config(
        hidden_size=enc.hidden, num_hidden_layers=enc.num_layers, num_attention_heads=enc.num_heads,
        intermediate_size=enc.ffn, conv_dim=[c for c, _, _ in enc.conv_layers],
        conv_kernel=[k for _, k, _ in enc.conv_layers], conv_stride=[s for _, _, s in enc.conv_layers],
        conv_bias=cfg.conv_bias, feat_extract_norm="layer" if cfg.stable_layer_norm else "group",
        do_stable_layer_norm=cfg.stable_layer_norm, vocab_size=len(cfg.labels),
    )  # fmt: skip
    m = TorchCTC(hf).eval()
    x = torch.from_numpy(np.stack([w for w, _ in items]))
    with torch.inference_mode():
        m(x)
        t0 = time.perf_counter()
        for _ in range(repeat):
            torch.log_softmax(m(x).logits, -1)
    sec = (time.perf_counter() - t0) / repeat
    print(f"transformers Wav2Vec2ForCTC emissions alone ({torch.get_num_threads()} threads): {sec:.2f} s -> "
          f"{audio_s / sec:.1f} audio-s/s; JAX aligner (emissions + Viterbi) / torch emissions time: "
          f"{sec_jax / sec:.2f}")  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="base")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true", help="skip transformers' Wav2Vec2ForCTC emissions")
    a = ap.parse_args(argv)
    cfg = Wav2Vec2CTCConfig(labels=LABELS, blank=0, **MODELS[a.model])
    params = jax.jit(Wav2Vec2ForCTC(cfg).init)(jax.random.PRNGKey(0), np.zeros((1, 4000), np.float32))["params"]
    aligner = CTCAligner(params, cfg)
    rng = np.random.default_rng(0)
    n = int(a.seconds * 16000)
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * max(1, int(a.seconds / 3)))
    items = [(rng.normal(size=n).astype(np.float32) * 0.1, text) for _ in range(a.batch)]
    aligner.align_batch(items)  # compile
    t0 = time.perf_counter()
    for _ in range(a.repeat):
        out = aligner.align_batch(items)
    sec = (time.perf_counter() - t0) / a.repeat
    assert all(isinstance(o, list) for o in out)
    print(f"{a.model} on {jax.devices()[0].platform}: {a.batch} x {a.seconds:.0f} s per call, "
          f"{sec:.2f} s -> {a.batch * a.seconds / sec:.1f} audio-s/s")  # fmt: skip

    if not a.no_torch:
        torch_emissions(cfg, items, a.repeat, a.batch * a.seconds, sec_jax=sec)

    t_frames = int(a.seconds * 50)
    logp = jax.nn.log_softmax(rng.normal(size=(a.batch, t_frames, len(LABELS))).astype(np.float32), -1)
    tgt = rng.integers(1, len(LABELS), size=(a.batch, len(text))).astype(np.int32)
    args = (logp, tgt, np.full(a.batch, t_frames, np.int32), np.full(a.batch, len(text), np.int32))
    jax.block_until_ready(ctc_viterbi(*args))
    t0 = time.perf_counter()
    for _ in range(a.repeat):
        jax.block_until_ready(ctc_viterbi(*args))
    sec = (time.perf_counter() - t0) / a.repeat
    print(f"viterbi alone: [{a.batch}, {t_frames} frames, {len(text)} labels] {sec * 1000:.2f} ms -> "
          f"{a.batch * a.seconds / sec:.0f} audio-s/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
