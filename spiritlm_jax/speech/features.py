"""Log-mel frame features at the HuBERT unit rate (25 Hz: hop 640 at 16 kHz).

Frame i covers samples [640 i, 640 i + 1024) of the (centre-padded) signal; an utterance of N
samples gives N // 640 frames, the frame count of the 25 Hz HuBERT stack for the same audio. Used by
the k-means units of the demo corpus (no pretrained HuBERT is available offline).
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
HOP = 640


def log_mel(wav: np.ndarray, n_mels: int = 40, n_fft: int = 1024, cmvn: bool = True) -> np.ndarray:
    """[N] float audio at 16 kHz -> [N // 640, n_mels] float32 log-mel features."""
    import librosa

    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected mono audio [N], got shape {wav.shape}")
    n_frames = len(wav) // HOP
    if n_frames == 0:
        return np.zeros((0, n_mels), np.float32)
    mel = librosa.feature.melspectrogram(y=wav, sr=SAMPLE_RATE, n_fft=n_fft, hop_length=HOP, n_mels=n_mels,
                                         center=True, power=2.0)
    feats = np.log(mel[:, :n_frames].T + 1e-6).astype(np.float32)
    if cmvn:
        feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-5)
    return feats
