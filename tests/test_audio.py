"""Audio loading and chunking on real recordings (tests/data: 8 kHz Asterisk prompts; amfm_decompy's
16 kHz sample), plus the error and silence behaviour documented in spiritlm_jax/speech/audio.py."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spiritlm_jax.speech.audio import (
    MIN_CHUNK_SAMPLES,
    SAMPLE_RATE,
    chunk_audio,
    is_silent,
    load_audio,
)

DATA = Path(__file__).parent / "data"
PROMPTS = [DATA / "agent-pass.wav", DATA / "agent-loginok.wav", DATA / "vm-intro.wav"]


@pytest.fixture(scope="module")
def amfm_wav() -> Path:
    amfm = pytest.importorskip("amfm_decompy")
    return Path(amfm.__file__).parent / "sample.wav"


@pytest.mark.parametrize("path", PROMPTS, ids=lambda p: p.stem)
def test_8khz_prompts_resample_to_16khz(path):
    """8 kHz -> 16 kHz doubles the length exactly (ceil(n * 16000 / 8000), torchaudio's length), and
    the even output samples are the input samples again: the recordings are band-limited below 4 kHz,
    so a good resampler changes them only by its filter's passband ripple. Measured relative RMS error
    0.4-1.0 %; 3 % leaves room for another soxr build and fails for a wrong rate or a shifted signal."""
    x, sr = sf.read(path, dtype="float32")
    assert sr == 8000
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1 and y.flags.c_contiguous
    assert len(y) == 2 * len(x)
    rel = np.sqrt(np.mean((y[::2] - x) ** 2) / np.mean(x**2))
    assert rel < 0.03
    assert load_audio(str(path)).tolist() == y.tolist()  # str and Path alike


def test_16khz_file_is_not_resampled(amfm_wav):
    x, sr = sf.read(amfm_wav, dtype="float32")
    assert sr == SAMPLE_RATE and len(x) == 14259
    np.testing.assert_array_equal(load_audio(amfm_wav), x)


def test_other_rates_keep_torchaudio_length_and_pitch():
    """A 440 Hz tone at 44.1 kHz comes out at 16 kHz with ceil(n * 16000 / 44100) samples and the same
    frequency (correlation with the ideal tone > 0.999 away from the edges)."""
    for sr, n in [(44100, 44100), (22050, 12345), (48000, 16001), (11025, 999)]:
        t = np.arange(n) / sr
        y = load_audio((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), input_sample_rate=sr)
        assert len(y) == math.ceil(n * SAMPLE_RATE / sr), sr
        ideal = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(y)) / SAMPLE_RATE)
        mid = slice(len(y) // 10, len(y) - len(y) // 10)
        assert np.corrcoef(y[mid], ideal[mid])[0, 1] > 0.999, sr


def test_stereo_is_averaged_or_one_channel_picked(tmp_path):
    left, _ = sf.read(PROMPTS[0], dtype="float32")
    right = 0.5 * np.roll(left, 800)  # a different signal in the other channel
    stereo = np.stack([left, right], axis=1)  # [N, 2]
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 8000, subtype="FLOAT")
    mono = load_audio(path)
    np.testing.assert_allclose(mono, load_audio((left + right) / 2, input_sample_rate=8000), atol=1e-6)
    np.testing.assert_allclose(load_audio(path, channel=0), load_audio(PROMPTS[0]), atol=1e-6)
    np.testing.assert_allclose(load_audio(path, channel=1), load_audio(right, input_sample_rate=8000), atol=1e-6)
    # arrays in either orientation
    np.testing.assert_allclose(load_audio(stereo, 8000), mono, atol=1e-6)
    np.testing.assert_allclose(load_audio(stereo.T, 8000), mono, atol=1e-6)
    with pytest.raises(ValueError, match=r"channel 2 requested but the audio has 2 channel\(s\)"):
        load_audio(path, channel=2)


def test_bytes_file_objects_and_other_formats(tmp_path, amfm_wav):
    path = PROMPTS[1]
    want = load_audio(path)
    raw = path.read_bytes()
    np.testing.assert_array_equal(load_audio(raw), want)
    np.testing.assert_array_equal(load_audio(bytearray(raw)), want)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(load_audio(f), want)
    np.testing.assert_array_equal(load_audio(io.BytesIO(amfm_wav.read_bytes())), load_audio(amfm_wav))
    x, _ = sf.read(path, dtype="int16")
    sf.write(tmp_path / "a.flac", x, 8000)  # lossless: the same samples
    np.testing.assert_array_equal(load_audio(tmp_path / "a.flac"), want)
    sf.write(tmp_path / "a.ogg", x, 8000)  # lossy: close
    assert np.corrcoef(load_audio(tmp_path / "a.ogg")[: len(want)], want)[0, 1] > 0.95


def test_arrays(amfm_wav):
    x16, _ = sf.read(amfm_wav, dtype="int16")
    xf, _ = sf.read(amfm_wav, dtype="float32")
    np.testing.assert_array_equal(load_audio(xf), xf)  # no rate given: taken to be 16 kHz already
    np.testing.assert_array_equal(load_audio(x16), xf)  # integer PCM scaled like soundfile does
    np.testing.assert_array_equal(load_audio(x16.astype(np.int32) << 16), xf)
    np.testing.assert_array_equal(load_audio(xf.tolist()), xf)  # anything np.asarray takes
    p8, _ = sf.read(PROMPTS[0], dtype="float32")
    np.testing.assert_array_equal(load_audio(p8, input_sample_rate=8000), load_audio(PROMPTS[0]))
    assert len(load_audio(xf, input_sample_rate=16000, sample_rate=8000)) == math.ceil(len(xf) / 2)


def test_errors_name_the_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav does not exist"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="is not a file"):
        load_audio(tmp_path)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt nonsense" * 10)
    with pytest.raises(ValueError, match=r"garbage\.wav: cannot read audio"):
        load_audio(garbage)
    (tmp_path / "notes.txt").write_text("not audio at all\n" * 50)
    with pytest.raises(ValueError, match=r"notes\.txt: cannot read audio"):
        load_audio(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="audio bytes .*cannot read audio"):
        load_audio(b"definitely not audio")
    with pytest.raises(ValueError, match="audio bytes are empty"):
        load_audio(b"")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match=r"empty\.wav: audio is empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(ValueError, match="audio is empty"):
        load_audio(np.zeros(0, np.float32))
    for bad in (np.nan, np.inf, -np.inf):
        x = np.zeros(4000, np.float32)
        x[100] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            load_audio(x)
    with pytest.raises(ValueError, match="input sample rate must be a positive integer"):
        load_audio(np.zeros(4000, np.float32), input_sample_rate=0)
    with pytest.raises(ValueError, match="at 8000 Hz but input_sample_rate=16000"):
        load_audio(PROMPTS[0], input_sample_rate=16000)
    with pytest.raises(ValueError, match="expected \\[N\\]"):
        load_audio(np.zeros((2, 2, 100), np.float32))
    with pytest.raises(ValueError, match="cannot tell the channel axis"):
        load_audio(np.zeros((32, 16000), np.float32))  # a batch, not channels
    with pytest.raises(ValueError, match="numeric samples"):
        load_audio(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="unsupported audio input of type int"):
        load_audio(3)


def test_silence_is_valid_audio_unless_rejected(tmp_path):
    """Documented choice: silent audio loads unchanged (the encoders give their units for it, as the
    reference does); reject_silent=True turns it into a clear error for data preparation."""
    zeros = np.zeros(8000, np.float32)
    sf.write(tmp_path / "silence.wav", zeros, 8000)
    out = load_audio(tmp_path / "silence.wav")
    assert len(out) == 16000 and not out.any() and is_silent(out)
    with pytest.raises(ValueError, match=r"silence\.wav: audio is silent"):
        load_audio(tmp_path / "silence.wav", reject_silent=True)
    assert not is_silent(load_audio(PROMPTS[0]))
    load_audio(PROMPTS[0], reject_silent=True)  # speech passes


def test_chunking_as_the_reference():
    wav = np.arange(250 * SAMPLE_RATE, dtype=np.float32)
    chunks = chunk_audio(wav)
    assert [len(c) for c in chunks] == [100 * SAMPLE_RATE, 100 * SAMPLE_RATE, 50 * SAMPLE_RATE]
    np.testing.assert_array_equal(np.concatenate(chunks), wav)
    step = 100 * SAMPLE_RATE
    assert [len(c) for c in chunk_audio(np.zeros(step + MIN_CHUNK_SAMPLES - 1))] == [step]  # tail dropped
    assert [len(c) for c in chunk_audio(np.zeros(step + MIN_CHUNK_SAMPLES))] == [step, MIN_CHUNK_SAMPLES]
    assert chunk_audio(np.zeros(MIN_CHUNK_SAMPLES - 1)) == []
    assert chunk_audio(np.zeros(0)) == []
    assert [len(c) for c in chunk_audio(np.zeros(5000), max_seconds=0.1, min_samples=1000)] == [1600] * 3
    real = load_audio(PROMPTS[2])  # 5.65 s: one chunk
    assert len(chunk_audio(real)) == 1 and chunk_audio(real)[0] is not None
    with pytest.raises(ValueError, match="mono audio"):
        chunk_audio(np.zeros((2, 5000)))
    with pytest.raises(ValueError, match="at least one sample"):
        chunk_audio(np.zeros(5000), max_seconds=0)
