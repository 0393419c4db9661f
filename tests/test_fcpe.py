"""FCPE in JAX vs torchfcpe (the reference Spirit LM calls), with torchfcpe's real shipped weights on
real speech, plus random-weight checks of the parts the shipped model does not exercise.

Tolerances (fp32 on CPU):
- log mel: max abs diff <= 5e-3. The two FFTs (pocketfft in torch, XLA's in JAX) round differently,
  an absolute error of ~1e-7 of the frame energy per bin; in the near-silent bins above 4 kHz of the
  8 kHz prompts (magnitudes near the 3e-5 floor that sqrt(. + 1e-9) sets) that is up to ~1e-3 in the
  log. Measured: 7e-5 (16 kHz sample), 1.3e-3 (resampled prompts).
- salience from the same mel: max abs diff <= 2e-5 (measured 3e-6: fp32 conv/matmul summation order).
- F0 and voicing end to end: voicing equal on >= 99% of frames, and max relative F0 error <= 1e-4 on
  frames voiced in both (and on every frame, interpolated ones included, when voicing agrees
  everywhere). Salience differs by ~1e-6, so a frame flips voicing only if its peak salience lies
  within ~1e-6 of the 0.05 threshold (or its F0 of 50 Hz), and the local-argmax window only moves if
  two bins tie within ~1e-6; either is rare but legitimate, hence 99% rather than 100%. Without such
  a flip the weighted mean of cents differs by ~1e-6 relative. Measured: voicing equal on 100% of
  frames, max relative F0 error 1.4e-6.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from spiritlm_jax.speech import fcpe
from spiritlm_jax.speech.audio import load_audio
from tests.fcpe_reference import bundled_model, converted_bundled, import_torchfcpe, spiritlm_f0
from tools.convert_weights.common import ConversionError
from tools.convert_weights.fcpe_from_torchfcpe import config_from_torchfcpe, main, params_from_state_dict

DATA = Path(__file__).parent / "data"
AMFM = Path(importlib.util.find_spec("amfm_decompy").submodule_search_locations[0]) / "sample.wav"


@pytest.fixture(scope="module")
def real():
    """(config, params) converted from torchfcpe's shipped checkpoint, and the torchfcpe model."""
    cfg, params = converted_bundled()
    return cfg, params, bundled_model()


@pytest.fixture(scope="module")
def speech():
    """16 kHz speech: amfm_decompy's sample and the three 8 kHz Asterisk prompts resampled (librosa
    soxr_hq, via the library's loader); the same arrays go to both implementations."""
    return [load_audio(AMFM)] + [load_audio(DATA / f"{n}.wav") for n in ("agent-loginok", "agent-pass", "vm-intro")]


def test_real_weights_match_torchfcpe_on_real_speech(real, speech):
    cfg, params, model = real
    ours = fcpe.F0Extractor(params, cfg).batch(speech)  # one padded batch of four lengths
    for wav, (f0, vuv) in zip(speech, ours):
        f0_ref, vuv_ref = spiritlm_f0(model, wav)
        assert f0.shape == vuv.shape == f0_ref.shape == (len(wav) // 80 + 1,)
        # the reference output is real pitch, not a degenerate track
        assert 0.5 < vuv_ref.mean() < 0.95 and 80 < np.median(f0_ref[vuv_ref > 0]) < 400
        assert set(np.unique(vuv)) <= {0.0, 1.0}
        assert (vuv == vuv_ref).mean() >= 0.99
        both = (vuv > 0) & (vuv_ref > 0)
        rel = np.abs(f0 - f0_ref) / f0_ref
        assert rel[both].max() <= 1e-4
        if (vuv == vuv_ref).all():
            assert rel.max() <= 1e-4  # interpolated (unvoiced) frames too
        assert f0.max() <= 1100.0 and f0.min() > 0


def test_mel_and_salience_match_torchfcpe(real, speech):
    cfg, params, model = real
    mel_fn = jax.jit(lambda w, n: fcpe.log_mel(w, n, cfg))
    net = jax.jit(lambda p, x: fcpe.FCPENet(cfg).apply({"params": p}, x))
    for wav in speech[:2]:
        mel_ref = model.wav2mel(torch.from_numpy(wav)[None, :, None], 16000)
        mel = np.asarray(mel_fn(jnp.asarray(wav)[None], jnp.array([len(wav)])))
        assert mel.shape == tuple(mel_ref.shape) == (1, len(wav) // 160 + 1, 128)
        assert np.abs(mel - mel_ref.numpy()).max() <= 5e-3
        with torch.no_grad():
            sal_ref = model.model(mel_ref).numpy()
        sal = net(params["net"], jnp.asarray(mel_ref.numpy()))
        assert np.abs(np.asarray(sal) - sal_ref).max() <= 2e-5


def test_batch_of_padded_items_equals_each_alone(real, speech):
    """Per-item lengths reach every length-dependent step (reflect pad, GroupNorm, convs, resize)."""
    cfg, params, _ = real
    fx = fcpe.F0Extractor(params, cfg)
    wavs = [speech[0][:5000], speech[1][:16001], speech[0]]
    for (f0_b, vuv_b), w in zip(fx.batch(wavs), wavs):
        f0_1, vuv_1 = fx(w)
        np.testing.assert_array_equal(vuv_b, vuv_1)
        np.testing.assert_allclose(f0_b, f0_1, rtol=1e-5)


def _tiny_torch_model(conv_only: bool, use_fa_norm: bool, harmonic: bool, seed: int):
    torch.manual_seed(seed)
    models = import_torchfcpe().models
    m = models.CFNaiveMelPE(
        input_channels=16,
        out_dims=40,
        hidden_dims=32,
        n_layers=2,
        n_heads=2,
        f0_max=1975.5,
        f0_min=32.70,
        use_fa_norm=use_fa_norm,
        conv_only=conv_only,
        use_harmonic_emb=harmonic,
    ).eval()
    with torch.no_grad():  # move the norms away from their identity init
        for name, p in m.named_parameters():
            if "norm" in name or "input_stack.1" in name:
                p.add_(0.3 * torch.randn_like(p))
    return m


@pytest.mark.parametrize(
    "conv_only,use_fa_norm,harmonic", [(False, True, False), (False, False, True), (True, True, True)]
)
def test_network_paths_with_random_weights(conv_only, use_fa_norm, harmonic):
    """The Performer attention (absent from the shipped conv-only model), the harmonic embedding and
    both key layouts of the weight-normed output layer, against torchfcpe's own CFNaiveMelPE; then a
    padded batch gives each item its unpadded salience."""
    m = _tiny_torch_model(conv_only, use_fa_norm, harmonic, seed=int(conv_only) + 2 * int(harmonic))
    cfg = config_from_torchfcpe(
        {
            "mel": {"num_mels": 16},
            "model": {
                "out_dims": 40,
                "hidden_dims": 32,
                "n_layers": 2,
                "n_heads": 2,
                "f0_min": 32.70,
                "f0_max": 1975.5,
                "use_fa_norm": use_fa_norm,
                "conv_only": conv_only,
                "use_harmonic_emb": harmonic,
            },
        }
    )
    params = params_from_state_dict(m.state_dict(), cfg)
    assert ("attn" in params["net"]["layer_0"]) == (not conv_only)
    rng = np.random.default_rng(0)
    mels = [rng.normal(-4, 2, (t, 16)).astype(np.float32) for t in (57, 40)]
    net = jax.jit(lambda p, x, n: fcpe.FCPENet(cfg).apply({"params": p}, x, n))
    padded = np.zeros((2, 57, 16), np.float32)
    padded[1, :40] = mels[1]
    padded[0] = mels[0]
    got = np.asarray(net(params["net"], jnp.asarray(padded), jnp.array([57, 40])))
    for i, mel in enumerate(mels):
        with torch.no_grad():
            ref = m(torch.from_numpy(mel)[None]).numpy()[0]
        assert np.abs(got[i, : len(mel)] - ref).max() <= 2e-5
        assert np.abs(ref - ref.mean()).max() > 1e-2  # the salience is not flat
    np.testing.assert_allclose(params["cent_table"], m.cent_table.numpy())
    np.testing.assert_allclose(fcpe.cent_table(cfg), m.cent_table.numpy(), rtol=1e-5)


def test_decoder_matches_torchfcpe_on_random_salience():
    """local_argmax/argmax decoding with the threshold, peaks at both table edges included."""
    m = _tiny_torch_model(True, True, False, seed=0)
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 0.2, (3, 30, 40)).astype(np.float32)
    y[0, :5, 0] = 0.9  # peak at the first bin: the window's clamped indices repeat bin 0
    y[1, :5, 39] = 0.9  # and at the last
    y[2, :10] = rng.uniform(0, 0.049, (10, 40))  # below threshold -> 0 Hz
    cents = jnp.asarray(m.cent_table.numpy())
    for decoder, ref_fn in (("local_argmax", m.latent2cents_local_decoder), ("argmax", m.latent2cents_decoder)):
        ref = m.cent_to_f0(ref_fn(torch.from_numpy(y), threshold=0.05)).numpy()[..., 0]
        got = np.asarray(jax.jit(fcpe.salience_to_f0, static_argnums=(2, 3))(jnp.asarray(y), cents, 0.05, decoder))
        assert (got == 0).sum() == 10 and ((got == 0) == (ref == 0)).all()
        np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_interpolation_matches_torchfcpe():
    interp = import_torchfcpe().torch_interp.batch_interp_with_replacement_detach
    rng = np.random.default_rng(2)
    f0 = rng.uniform(60, 400, (6, 25)).astype(np.float32)
    uv = rng.uniform(size=(6, 25)) < 0.5
    uv[0, :4] = uv[0, -3:] = True  # leading/trailing unvoiced runs take the edge F0
    uv[1] = True
    uv[1, 11] = False  # one voiced frame
    uv[2] = False  # nothing to fill
    ref = interp(torch.from_numpy(uv), torch.from_numpy(f0)).numpy()
    interp_jax = jax.jit(fcpe.interpolate_unvoiced)
    got = np.asarray(interp_jax(jnp.asarray(f0), jnp.asarray(uv), jnp.ones((6, 25), bool)))
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    # no voiced frame at all (the reference raises an IndexError): left as it is
    none = np.asarray(interp_jax(jnp.asarray(f0[:1]), jnp.ones((1, 25), bool), jnp.ones((1, 25), bool)))
    np.testing.assert_array_equal(none, f0[:1])


def test_nearest_resize_index_matches_torch_interpolate():
    """The 100 Hz -> 200 Hz grid resize for every sample count in a range covering all residues."""
    ns = np.arange(1024, 1024 + 2 * 160 * 7)
    t_in, t_out = ns // 160 + 1, ns // 80 + 1
    got = np.asarray(fcpe.nearest_index(jnp.asarray(t_out), jnp.asarray(t_in), int(t_out.max())))
    for i, (a, b) in enumerate(zip(t_in, t_out)):
        src = torch.arange(a, dtype=torch.float32)[None, None]
        ref = torch.nn.functional.interpolate(src, size=int(b), mode="nearest")[0, 0].long().numpy()
        np.testing.assert_array_equal(got[i, :b], ref)


def test_silence_gives_unvoiced_zeros(real):
    cfg, params, _ = real
    f0, vuv = fcpe.F0Extractor(params, cfg)(np.zeros(3000, np.float32))
    assert f0.shape == (3000 // 80 + 1,) and (vuv == 0).all() and (f0 == 0).all()


def test_bad_waveforms_are_named_errors(real):
    cfg, params, _ = real
    fx = fcpe.F0Extractor(params, cfg)
    with pytest.raises(ValueError, match="shorter than one FCPE window"):
        fx(np.zeros(1000, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        fx(np.full(2000, np.nan, np.float32))
    with pytest.raises(ValueError, match="mono"):
        fx(np.zeros((2, 2000), np.float32))


def test_converter_cli_writes_a_directory_the_library_loads(tmp_path, real, speech):
    cfg, params, _ = real
    assert main(["--out", str(tmp_path / "fcpe")]) == 0  # default: torchfcpe's shipped checkpoint
    loaded = fcpe.F0Extractor.load(tmp_path / "fcpe")
    assert loaded.cfg == cfg
    wav = speech[0][:8000]
    for a, b in zip(loaded(wav), fcpe.F0Extractor(params, cfg)(wav)):
        np.testing.assert_array_equal(a, b)
    assert main(["--out", str(tmp_path / "fcpe")]) == 2  # refuses to overwrite
    with pytest.raises(FileNotFoundError, match="not a converted FCPE"):
        fcpe.F0Extractor.load(tmp_path)


def test_converter_names_missing_and_misshaped_tensors(real):
    cfg = real[0]
    sd = dict(bundled_model().model.state_dict())
    missing = {k: v for k, v in sd.items() if k != "net.encoder_layers.3.conformer.net.4.conv.weight"}
    key = r"net\.encoder_layers\.3\.conformer\.net\.4\.conv\.weight"
    with pytest.raises(ConversionError, match="missing tensor " + key):
        params_from_state_dict(missing, cfg)
    bad = dict(sd, **{"input_stack.0.weight": torch.zeros(512, 64, 3)})
    msg = r"input_stack\.0\.weight has shape \(512, 64, 3\), expected \(512, 128, 3\)"
    with pytest.raises(ConversionError, match=msg):
        params_from_state_dict(bad, cfg)
    extra = dict(sd, **{"extra.weight": torch.zeros(3)})
    with pytest.raises(ConversionError, match="unexpected tensor extra.weight"):
        params_from_state_dict(extra, cfg)
    with pytest.raises(ConversionError, match="lacks 'out_dims'"):
        config_from_torchfcpe({"mel": {"num_mels": 128}, "model": {}})
