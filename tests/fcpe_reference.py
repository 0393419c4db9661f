"""torchfcpe, importable without torchaudio: the PyTorch reference for the FCPE parity tests.

torchfcpe's `mel_extractor.py` does `from torchaudio.transforms import Resample` at import time, only
to resample inputs whose rate differs from the model's 16 kHz. torchaudio is not installed (and must
not be: a multi-GB CUDA wheel), so `import_torchfcpe()` stands a minimal `torchaudio` /
`torchaudio.transforms` in `sys.modules` while torchfcpe imports, then takes it out again so no other
code sees a fake torchaudio. Its `Resample` is an identity module at equal rates and raises at
differing ones: every reference computation in the tests feeds 16 kHz audio, so torchfcpe's own mel
and model code runs unchanged. A real torchaudio, where installed, is used as is.

    torchfcpe = import_torchfcpe()
    model = bundled_model()                      # torchfcpe's shipped weights (fcpe_c_v001.pt)
    f0, vuv = spiritlm_f0(model, wav_16k)        # what Spirit LM's FCPEF0Extractor computes
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch


class _Resample(torch.nn.Module):
    """torchaudio.transforms.Resample stand-in: identity at equal rates, an error otherwise."""

    def __init__(self, orig_freq=16000, new_freq=16000, *args, **kwargs):
        super().__init__()
        if orig_freq != new_freq:
            raise NotImplementedError(
                f"the torchaudio stand-in cannot resample {orig_freq} Hz -> {new_freq} Hz; "
                "resample the audio to 16 kHz before calling torchfcpe"
            )

    def forward(self, x):
        return x


@functools.lru_cache(maxsize=None)
def import_torchfcpe():
    """The torchfcpe package, imported with the torchaudio stand-in when torchaudio is absent."""
    if "torchfcpe" in sys.modules or importlib.util.find_spec("torchaudio") is not None:
        return importlib.import_module("torchfcpe")
    ta = types.ModuleType("torchaudio")
    tr = types.ModuleType("torchaudio.transforms")
    tr.Resample = _Resample
    ta.transforms = tr
    sys.modules["torchaudio"], sys.modules["torchaudio.transforms"] = ta, tr
    try:
        return importlib.import_module("torchfcpe")
    finally:
        del sys.modules["torchaudio"], sys.modules["torchaudio.transforms"]


def bundled_weights_path() -> Path:
    """torchfcpe's shipped checkpoint (assets/fcpe_c_v001.pt), found without importing torchfcpe."""
    spec = importlib.util.find_spec("torchfcpe")
    if spec is None:
        raise FileNotFoundError("torchfcpe is not installed (pip install --no-deps torchfcpe==0.0.4)")
    return Path(spec.submodule_search_locations[0]) / "assets" / "fcpe_c_v001.pt"


@functools.lru_cache(maxsize=None)
def bundled_model():
    """torchfcpe.spawn_bundled_infer_model on the CPU (the model Spirit LM's FCPEF0Extractor uses)."""
    return import_torchfcpe().spawn_bundled_infer_model(device="cpu")


def spiritlm_f0(model, wav_16k: np.ndarray, hop_length: int = 80, interpolate: bool = True):
    """(f0, vuv) float32 [len // hop + 1] exactly as Spirit LM's FCPEF0Extractor.compute_f0_uv calls
    torchfcpe: local_argmax decoder, threshold 0.05, f0_min 50, f0_max 1100, unvoiced frames
    interpolated, nearest resize to the 200 Hz target length, vuv = 1 - uv."""
    wav = np.asarray(wav_16k, np.float32).squeeze()
    target = len(wav) // hop_length + 1
    x = torch.from_numpy(wav).float()[None, :, None]
    f0, uv = model.infer(
        x,
        sr=16000,
        decoder_mode="local_argmax",
        threshold=0.05,
        f0_min=50,
        f0_max=1100,
        interp_uv=interpolate,
        output_interp_target_length=target,
        retur_uv=True,
    )
    return f0.squeeze().cpu().numpy(), (1 - uv).squeeze().cpu().numpy()


@functools.lru_cache(maxsize=None)
def converted_bundled():
    """(FCPEConfig, Flax params) of the shipped checkpoint through our converter, once per process."""
    from tools.convert_weights.fcpe_from_torchfcpe import bundled_checkpoint, load_checkpoint

    return load_checkpoint(bundled_checkpoint())
