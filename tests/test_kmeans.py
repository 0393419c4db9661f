"""k-means unit quantizer (spiritlm_jax/speech/kmeans.py, CLI spiritlm_jax/kmeans.py) and its frame features
(speech/features.py)."""

from pathlib import Path

import numpy as np
import pytest

from spiritlm_jax.io import read_configs, save_component
from spiritlm_jax.kmeans import main
from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.features import (
    HOP,
    SAMPLE_RATE,
    WINDOW,
    FeatureConfig,
    LibrosaFeatures,
    feature_extractor,
    log_mel,
    mfcc,
    num_frames,
)
from spiritlm_jax.speech.kmeans import (
    MelUnitTokenizer,
    assign,
    inertia,
    kmeans_config,
    kmeans_plusplus,
    train_kmeans,
)
from spiritlm_jax.speech.quantizer import KMEANS_FILE, KMEANS_SPEC, KMeansConfig, load_kmeans

DATA = Path(__file__).parent / "data"
WAVS = sorted(DATA.glob("*.wav"))


def _blobs(seed=0, k=6, d=8, n_per=300, spread=0.05):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32) * 5
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + spread * rng.normal(size=(len(labels), d)).astype(np.float32)
    perm = rng.permutation(len(x))
    return x[perm], labels[perm], centres


def _brute(x, c):
    d = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1), d.min(1)


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_separated_clusters(seed):
    # k-means++ seeding is what makes this reliable (uniform random init can leave two centres in one blob)
    x, labels, centres = _blobs()
    res = train_kmeans(x, 6, seed=seed, batch_size=256, steps=60, lloyd_steps=3)
    # every true centre has a centroid within a few noise standard deviations (spread 0.05, mean of 300)
    dist = np.sqrt(((centres[:, None] - res.centroids[None]) ** 2).sum(-1))
    assert dist.min(1).max() < 0.05
    ids = assign(x, res.centroids)
    # the partition is exactly the true one (up to renaming)
    pairs = set(zip(labels.tolist(), ids.tolist()))
    assert len(pairs) == 6 and len({p[1] for p in pairs}) == 6
    assert res.sizes.tolist() == np.bincount(ids, minlength=6).tolist()
    # inertia: the noise energy, 300*6 points * 8 dims * 0.05^2 = 36 in expectation
    assert res.inertia == pytest.approx(_brute(x, res.centroids)[1].sum(), rel=1e-4)
    assert 25 < res.inertia < 50


def test_deterministic_under_seed():
    x, _, _ = _blobs(seed=3, k=10, n_per=100, spread=1.0)
    a = train_kmeans(x, 10, seed=7, batch_size=128, steps=40, lloyd_steps=1)
    b = train_kmeans(x, 10, seed=7, batch_size=128, steps=40, lloyd_steps=1)
    c = train_kmeans(x, 10, seed=8, batch_size=128, steps=40, lloyd_steps=1)
    r1, r2 = (train_kmeans(x, 10, seed=7, steps=5, init="random") for _ in range(2))
    np.testing.assert_array_equal(r1.centroids, r2.centroids)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.history == b.history
    assert not np.array_equal(a.centroids, c.centroids)


def test_assign_equals_brute_force_numpy():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(37, 13)).astype(np.float32)
    for n in (0, 1, 255, 257, 1000):
        x = rng.normal(size=(n, 13)).astype(np.float32)
        ids, d2 = _brute(x, c)
        np.testing.assert_array_equal(assign(x, c), ids)
        np.testing.assert_array_equal(assign(x, c, chunk=256), ids)  # several padded chunks
        assert inertia(x, c) == pytest.approx(d2.sum(), rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="do not match centroids"):
        assign(np.zeros((4, 12), np.float32), c)


def test_kmeans_plusplus_spreads_over_clusters():
    import jax

    x, labels, _ = _blobs(k=5, n_per=50)
    c = np.asarray(kmeans_plusplus(jax.random.PRNGKey(0), x, 5))
    # with clusters 5 sigma apart, D^2 sampling puts one seed in each cluster
    assert sorted(labels[[np.flatnonzero((x == ci).all(1))[0] for ci in c]].tolist()) == [0, 1, 2, 3, 4]


def test_empty_clusters_are_reseeded():
    # 3 clusters, one with 98% of the rows: random init puts all centres there (identical points), so
    # two clusters are empty after the first assignment and must be re-seeded on the far points.
    big = np.zeros((980, 2), np.float32)
    x = np.concatenate([big, np.full((10, 2), 10.0, np.float32), np.full((10, 2), -10.0, np.float32)])
    res = train_kmeans(x, 3, seed=0, steps=0, lloyd_steps=4, init="random", init_sample=900)
    assert res.reseeded >= 1
    assert sorted(res.sizes.tolist()) == [10, 10, 980]
    assert res.inertia == pytest.approx(0.0, abs=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="between 1 and the number of feature rows"):
        train_kmeans(np.zeros((3, 2)), 5)
    with pytest.raises(ValueError, match="NaN"):
        train_kmeans(np.full((10, 2), np.nan), 2)
    with pytest.raises(ValueError, match="init"):
        train_kmeans(np.zeros((10, 2)), 2, init="kmeans||")
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        train_kmeans(np.zeros(10), 2)


# ---- features ----


def test_frame_count_matches_hubert_conv_stack():
    layers = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 3  # mHuBERT 25 Hz: the 320 stack + one stride-2 conv

    def conv_frames(n):
        for k, s in layers:
            n = (n - k) // s + 1
            if n <= 0:
                return 0
        return n

    rng = np.random.default_rng(0)
    for n in [0, 719, 720, 1359, 1360, 1361, 16000, 16000 * 3 + 17]:
        assert num_frames(n) == conv_frames(n)
        wav = rng.normal(size=n).astype(np.float32) * 0.1
        assert log_mel(wav).shape == (conv_frames(n), 40)
        assert mfcc(wav, deltas=True).shape == (conv_frames(n), 39)
    assert (WINDOW, HOP, SAMPLE_RATE) == (720, 640, 16000)


def test_log_mel_tone_lands_in_its_band_and_cmvn():
    import librosa

    t = np.arange(16000) / SAMPLE_RATE
    wav = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    f = log_mel(wav, cmvn=False)
    band = np.argmin(np.abs(librosa.mel_frequencies(42, fmax=8000)[1:-1] - 1000))
    assert np.all(f.argmax(1) == band)
    # CMVN: zero mean, unit variance, except the empty bands above 4 kHz of this 8 kHz recording,
    # which stay ~0 (std floor) instead of becoming unit-variance noise
    raw = log_mel(load_audio(WAVS[0]), cmvn=False)
    g = log_mel(load_audio(WAVS[0]))
    np.testing.assert_allclose(g.mean(0), 0, atol=1e-4)
    live = raw.std(0) > 0.1
    assert 20 < live.sum() < 40
    np.testing.assert_allclose(g.std(0)[live], 1, atol=1e-4)
    assert np.abs(g[:, ~live]).max() < 1e-2
    # fmax limits the filterbank: a 6 kHz tone is invisible with fmax=4000
    hi = (0.5 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    assert log_mel(hi, cmvn=False, fmax=4000).max() < log_mel(hi, cmvn=False).max() - 10


def test_feature_config_round_trip_and_errors():
    cfg = FeatureConfig(kind="mfcc", n_mfcc=20, deltas=True, fmax=4000.0)
    assert feature_extractor(cfg.to_dict()).config == cfg and cfg.dim == 60
    with pytest.raises(ValueError, match="not one of"):
        FeatureConfig(kind="plp")
    with pytest.raises(ValueError, match="fmax"):
        FeatureConfig(fmax=9000)
    with pytest.raises(ValueError, match="unknown feature parameters"):
        FeatureConfig.from_dict({"type": "log_mel", "n_fft": 512})
    with pytest.raises(ValueError, match=r"shape \[N\]"):
        log_mel(np.zeros((2, 800)))


# ---- quantizer directory, tokenizer, CLI ----


def test_quantizer_dir_and_mel_unit_tokenizer(tmp_path):
    feats = LibrosaFeatures(FeatureConfig(kind="mfcc", n_mfcc=13))
    wavs = [load_audio(p) for p in WAVS]
    x = np.concatenate([feats(w) for w in wavs])
    res = train_kmeans(x, 16, seed=0, batch_size=128, steps=20)
    save_component(
        tmp_path,
        KMEANS_SPEC,
        {"centroids": res.centroids},
        {KMEANS_FILE: kmeans_config(res, feats.params(), {"seed": 0})},
    )
    c, meta = load_kmeans(tmp_path)
    np.testing.assert_array_equal(c, res.centroids)
    assert meta.features["type"] == "mfcc" and meta.k == 16 and meta.training["seed"] == 0
    tok = MelUnitTokenizer(tmp_path)
    one = [tok.encode_units(p)["hubert"] for p in WAVS]
    batch = tok.encode_units_batch(wavs)
    for w, u, b in zip(wavs, one, batch):
        assert len(u) == num_frames(len(w)) and u.max() < 16 and u.dtype == np.int64
        np.testing.assert_array_equal(u, b["hubert"])
        np.testing.assert_array_equal(u, _brute(feats(w), res.centroids)[0])
    assert tok.encode_string(WAVS[0]).startswith("[Hu")
    with pytest.raises(FileNotFoundError, match="k-means quantizer directory .*nope does not exist"):
        MelUnitTokenizer(tmp_path / "nope")
    save_component(
        tmp_path / "dim5",
        KMEANS_SPEC,
        {"centroids": np.zeros((16, 5), np.float32)},
        {KMEANS_FILE: KMeansConfig(k=16, dim=5, features=feats.params())},
    )
    with pytest.raises(ValueError, match="features have dim 13 but centroids 5"):
        MelUnitTokenizer(tmp_path / "dim5")


def test_cli_trains_and_reports_skipped_files(tmp_path):
    lst = tmp_path / "audio.txt"
    lst.write_text("\n".join(str(p) for p in WAVS) + f"\n{tmp_path / 'missing.wav'}\n")
    out = tmp_path / "q"
    rc = main(["--audio-list", str(lst), "--k", "8", "--out", str(out), "--steps", "10", "--batch-size", "64"])
    assert rc == 3  # trained, one file skipped
    meta = read_configs(out, KMEANS_SPEC)[KMEANS_FILE]
    assert meta.k == 8 and meta.features["type"] == "log_mel" and meta.training["skipped_files"] == 1
    assert load_kmeans(out)[0].shape == (8, 40)
    assert main(["--audio-list", str(lst), "--k", "600", "--out", str(out)]) == 2
    assert main(["--audio-list", str(tmp_path / "none.txt"), "--out", str(out)]) == 2


def test_hubert_layer_features_plug_in(tmp_path):
    """A converted (here: tiny, random) HuBERT directory plugs into the trainer and the unit tokenizer
    through the same FrameFeatures interface; frames follow the same 25 Hz length convention."""
    import jax

    from spiritlm_jax.speech.hubert import STRIDE_640_25HZ, Hubert, HubertConfig
    from spiritlm_jax.speech.tokenizer import SPEECH_TOKENIZER_SPEC

    cfg = HubertConfig(
        conv_layers=tuple((16, k, s) for _, k, s in STRIDE_640_25HZ),
        hidden=32,
        num_layers=2,
        num_heads=2,
        ffn=64,
        pos_conv_kernel=8,
        pos_conv_groups=4,
        output_layer=2,
    )
    params = Hubert(cfg).init(jax.random.PRNGKey(0), np.zeros((1, 4000), np.float32), np.array([4000]))["params"]
    ckpt = save_component(tmp_path / "hubert", SPEECH_TOKENIZER_SPEC, {"hubert": params}, {"hubert.yaml": cfg})
    feats = feature_extractor({"type": "hubert", "checkpoint": str(ckpt)})
    assert feats.name == "hubert" and feats.dim == 32 and feats.params()["layer"] == 2
    wav = load_audio(DATA / "agent-loginok.wav")  # one length: one compilation
    x = feats(wav)
    assert x.shape == (num_frames(len(wav)), 32)
    res = train_kmeans(x, 8, steps=10, batch_size=64)
    save_component(
        tmp_path / "q", KMEANS_SPEC, {"centroids": res.centroids}, {KMEANS_FILE: kmeans_config(res, feats.params())}
    )
    tok = MelUnitTokenizer(tmp_path / "q")
    np.testing.assert_array_equal(tok.encode_units(wav)["hubert"], assign(x, res.centroids))


def test_old_npy_quantizer_directory_converts_to_the_same_units(tmp_path):
    """tools/convert_weights/kmeans_from_npy.py: centroids.npy + quantizer.json (the format before the
    component directories) -> kmeans.yaml + params/, the same centroids bit for bit, so the same units."""
    import json

    from tools.convert_weights import kmeans_from_npy

    feats = LibrosaFeatures(FeatureConfig())
    x = np.concatenate([feats(load_audio(p)) for p in WAVS])
    res = train_kmeans(x, 8, seed=0, batch_size=64, steps=5)
    old = tmp_path / "old"
    old.mkdir()
    np.save(old / "centroids.npy", res.centroids)
    (old / "quantizer.json").write_text(
        json.dumps({"k": 8, "dim": 40, "feature_params": feats.params(), "training": {"seed": 0}})
    )
    with pytest.raises(FileNotFoundError, match="kmeans_from_npy"):  # the old format names its converter
        MelUnitTokenizer(old)
    assert kmeans_from_npy.main(["--src", str(old), "--out", str(tmp_path / "new")]) == 0
    c, meta = load_kmeans(tmp_path / "new")
    np.testing.assert_array_equal(c, res.centroids)
    assert meta.features == feats.params() and meta.training == {"seed": 0}
    wav = load_audio(WAVS[0])
    np.testing.assert_array_equal(
        MelUnitTokenizer(tmp_path / "new").encode_units(wav)["hubert"], assign(feats(wav), res.centroids)
    )
    assert kmeans_from_npy.main(["--src", str(tmp_path / "none"), "--out", str(tmp_path / "n2")]) == 2


def test_frame_rate_is_measured_from_the_conv_stack_and_50hz_is_refused(tmp_path):
    """A standard 50 Hz HuBERT (7 convs, hop 320) gives 50 Hz features: measured, recorded, refused
    where the 25 Hz Spirit LM unit stream is required (the CLI and the unit tokenizer)."""
    import jax

    from spiritlm_jax.kmeans import main as kmeans_main
    from spiritlm_jax.speech.hubert import STANDARD_50HZ, Hubert, HubertConfig
    from spiritlm_jax.speech.tokenizer import SPEECH_TOKENIZER_SPEC

    cfg = HubertConfig(
        conv_layers=tuple((16, k, s) for _, k, s in STANDARD_50HZ),
        hidden=32,
        num_layers=1,
        num_heads=2,
        ffn=64,
        pos_conv_kernel=8,
        pos_conv_groups=4,
        output_layer=1,
    )
    params = Hubert(cfg).init(jax.random.PRNGKey(0), np.zeros((1, 4000), np.float32), np.array([4000]))["params"]
    ckpt = save_component(tmp_path / "h50", SPEECH_TOKENIZER_SPEC, {"hubert": params}, {"hubert.yaml": cfg})
    feats = feature_extractor({"type": "hubert", "checkpoint": str(ckpt)})
    assert feats.frame_rate_hz == 50.0 and feature_extractor({"kind": "log_mel"}).frame_rate_hz == 25.0
    (tmp_path / "list.txt").write_text(str(DATA / "agent-loginok.wav") + "\n")
    argv = ["--audio-list", str(tmp_path / "list.txt"), "--out", str(tmp_path / "q"), "--k", "4"]
    assert kmeans_main([*argv, "--hubert-checkpoint", str(ckpt)]) == 2
    x = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    conf = kmeans_config(x[:4], feats.params(), frame_rate_hz=feats.frame_rate_hz)
    assert conf.frame_rate_hz == 50.0
    save_component(tmp_path / "q50", KMEANS_SPEC, {"centroids": x[:4]}, {KMEANS_FILE: conf})
    with pytest.raises(ValueError, match=r"features at 50 Hz, but Spirit LM units are a 25 Hz stream"):
        MelUnitTokenizer(tmp_path / "q50")
