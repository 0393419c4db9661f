"""HiFi-GAN vocoder training: discriminators and losses against PyTorch, training reduces the mel
loss, SIGKILL resume is exact, and the export converts back to the same audio.

The PyTorch modules below are written here from the published HiFi-GAN architecture (MPD: periods,
reflect padding, (k, 1) convs with weight norm; MSD: grouped strided convs, spectral norm on the first
scale, AvgPool1d(4, 2, 2) between scales), parametrised by the same channel lists so the test stays small.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiritlm_jax.speech.discriminators import DiscriminatorConfig, Discriminators, init_discriminators
from spiritlm_jax.speech.hifigan import DurPredictorConfig, HifiGanConfig
from spiritlm_jax.vocoder_training import losses
from spiritlm_jax.vocoder_training import step as vstep
from spiritlm_jax.vocoder_training.config import (
    LossConfig,
    VocoderCheckpointConfig,
    VocoderDataConfig,
    VocoderTrainConfig,
)
from spiritlm_jax.vocoder_training.data import SegmentSampler, Utterance, dedup_runs

torch = pytest.importorskip("torch")
F = torch.nn.functional
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

SMALL_D = DiscriminatorConfig(
    periods=(2, 3, 5, 7, 11),
    mpd_channels=(4, 8, 16, 32, 32),
    msd_scales=3,
    msd_channels=(8, 8, 16, 16, 32, 32, 32),
    msd_groups=(1, 2, 4, 4, 4, 4, 1),
)
TINY_G = HifiGanConfig(
    num_embeddings=100,
    embedding_dim=16,
    multispkr=False,
    multistyle=False,
    upsample_initial_channel=32,
    resblock_kernel_sizes=(3,),
    resblock_dilation_sizes=((1, 3),),
    dur_predictor_params=DurPredictorConfig(encoder_embed_dim=16, var_pred_hidden_dim=16),
)
TINY_D = DiscriminatorConfig(
    periods=(2, 3),
    mpd_channels=(4, 8, 8),
    msd_scales=2,
    msd_channels=(4, 8, 8),
    msd_kernels=(15, 11, 5),
    msd_strides=(1, 4, 1),
    msd_groups=(1, 2, 1),
)


# ----- the published architecture in PyTorch -------------------------------------------------------


class TorchPeriod(torch.nn.Module):
    def __init__(self, period, channels, k=5, s=3):
        super().__init__()
        self.period = period
        wn = torch.nn.utils.weight_norm
        convs, cin = [], 1
        for i, c in enumerate(channels):
            last = i == len(channels) - 1
            convs.append(wn(torch.nn.Conv2d(cin, c, (k, 1), (1 if last else s, 1), padding=((k - 1) // 2, 0))))
            cin = c
        self.convs = torch.nn.ModuleList(convs)
        self.conv_post = wn(torch.nn.Conv2d(cin, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x):
        fmap = []
        b, c, t = x.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            x = F.pad(x, (0, n_pad), "reflect")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)
        for layer in self.convs:
            x = F.leaky_relu(layer(x), 0.1)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class TorchScale(torch.nn.Module):
    def __init__(self, cfg: DiscriminatorConfig, spectral: bool):
        super().__init__()
        norm = torch.nn.utils.spectral_norm if spectral else torch.nn.utils.weight_norm
        convs, cin = [], 1
        for c, k, s, g in zip(cfg.msd_channels, cfg.msd_kernels, cfg.msd_strides, cfg.msd_groups):
            convs.append(norm(torch.nn.Conv1d(cin, c, k, s, groups=g, padding=(k - 1) // 2)))
            cin = c
        self.convs = torch.nn.ModuleList(convs)
        self.conv_post = norm(torch.nn.Conv1d(cin, 1, 3, 1, padding=1))

    def forward(self, x):
        fmap = []
        for layer in self.convs:
            x = F.leaky_relu(layer(x), 0.1)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class TorchMSD(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.discriminators = torch.nn.ModuleList([TorchScale(cfg, i == 0) for i in range(cfg.msd_scales)])
        self.pool = torch.nn.AvgPool1d(4, 2, padding=2)

    def forward(self, y):
        scores, fmaps = [], []
        for i, d in enumerate(self.discriminators):
            if i:
                y = self.pool(y)
            s, f = d(y)
            scores.append(s)
            fmaps.append(f)
        return scores, fmaps


def _t(x):
    return torch.from_numpy(np.array(x, np.float32))


def _load_conv(mod, p, spectral_state=None, two_d=False):
    """Our NormConv1d params -> a torch (weight- or spectral-normed) conv."""
    with torch.no_grad():
        if "weight_v" in p:
            v = np.transpose(np.asarray(p["weight_v"]), (2, 1, 0))  # [out, in/g, k]
            if two_d:
                v = v[..., None]
            mod.weight_v.copy_(_t(v))
            mod.weight_g.copy_(_t(np.asarray(p["weight_g"]).reshape((-1,) + (1,) * (v.ndim - 1))))
        else:
            mod.weight_orig.copy_(_t(np.transpose(np.asarray(p["weight"]), (2, 1, 0))))
            mod.weight_u.copy_(_t(spectral_state["u"]))
            mod.weight_v.copy_(_t(spectral_state["v"]))
        mod.bias.copy_(_t(p["bias"]))


def _torch_discriminators(cfg, params, spectral):
    mpd = [TorchPeriod(p, cfg.mpd_channels, cfg.mpd_kernel_size, cfg.mpd_stride) for p in cfg.periods]
    for i, m in enumerate(mpd):
        p = params["mpd"][f"discriminators_{i}"]
        for j, conv in enumerate(m.convs):
            _load_conv(conv, p[f"convs_{j}"], two_d=True)
        _load_conv(m.conv_post, p["conv_post"], two_d=True)
    msd = TorchMSD(cfg)
    for i, d in enumerate(msd.discriminators):
        p = params["msd"][f"discriminators_{i}"]
        s = spectral.get("msd", {}).get(f"discriminators_{i}", {})
        for j, conv in enumerate(d.convs):
            _load_conv(conv, p[f"convs_{j}"], s.get(f"convs_{j}"))
        _load_conv(d.conv_post, p["conv_post"], s.get("conv_post"))
    return mpd, msd


@pytest.mark.parametrize("length", [3000, 3001])  # 3001: not a multiple of any period (reflect padding)
def test_mpd_and_msd_match_pytorch(length):
    """Scores and every feature map of MPD (5 periods) and MSD (3 scales, spectral norm on the first)
    equal the PyTorch modules with the same random weights (<= 1e-5); the spectral-norm power
    iteration updates u and v as torch's training mode does."""
    params, spectral = init_discriminators(SMALL_D, seed=3, n_samples=length)
    # give weight norm's g a value of its own (init makes g = ||v||)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 1.7 if getattr(path[-1], "key", "") == "weight_g" else x, params
    )
    audio = np.random.default_rng(0).standard_normal((2, length)).astype(np.float32) * 0.3
    (scores, fmaps), upd = Discriminators(SMALL_D).apply(
        {"params": params, "spectral": spectral}, jnp.asarray(audio), update_stats=True, mutable=["spectral"]
    )
    mpd, msd = _torch_discriminators(SMALL_D, params, spectral)
    x = torch.from_numpy(audio)[:, None]
    msd.train()
    with torch.no_grad():
        t_out = [m(x) for m in mpd]
        t_scores_msd, t_fmaps_msd = msd(x)
    t_scores = [s for s, _ in t_out] + t_scores_msd
    t_fmaps = [f for _, f in t_out] + t_fmaps_msd
    assert len(scores) == len(t_scores) == 8
    worst = 0.0
    for i, (s, ts) in enumerate(zip(scores, t_scores)):
        assert s.shape == tuple(ts.shape), i
        worst = max(worst, float(np.abs(np.asarray(s) - ts.numpy()).max()))
        for f, tf in zip(fmaps[i], t_fmaps[i]):
            tf = tf.numpy()
            if tf.ndim == 4:  # MPD [B, C, T/p, p] -> our rows [B*p, T/p, C]
                b, c, tt, p = tf.shape
                tf = tf.transpose(0, 3, 2, 1).reshape(b * p, tt, c)
            else:  # MSD [B, C, T] -> [B, T, C]
                tf = tf.transpose(0, 2, 1)
            assert f.shape == tf.shape
            worst = max(worst, float(np.abs(np.asarray(f) - tf).max()))
    assert worst <= 1e-5, worst
    sn = upd["spectral"]["msd"]["discriminators_0"]["convs_1"]
    np.testing.assert_allclose(np.asarray(sn["u"]), msd.discriminators[0].convs[1].weight_u.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(sn["v"]), msd.discriminators[0].convs[1].weight_v.numpy(), atol=1e-6)


def _torch_mel(y, n_fft, n_mels, sr, hop, win, fmin, fmax):
    """The published HiFi-GAN mel_spectrogram (meldataset.py) written out in torch."""
    import librosa

    basis = torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)).float()
    y = F.pad(y.unsqueeze(1), ((n_fft - hop) // 2, (n_fft - hop) // 2), mode="reflect").squeeze(1)
    spec = torch.stft(
        y, n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win), center=False, return_complex=True
    )
    spec = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    return torch.log(torch.clamp(torch.matmul(basis, spec), min=1e-5))


def test_losses_match_pytorch():
    """Each loss equals the PyTorch computation on the same tensors: the log-mel within 1e-5, the losses
    within 1e-5 (mel L1) / 1e-6 (the others) relative."""
    rng = np.random.default_rng(1)
    real = rng.standard_normal((2, 4000)).astype(np.float32) * 0.2
    fake = rng.standard_normal((2, 4000)).astype(np.float32) * 0.2
    for n_fft, hop, win in ((1024, 256, 1024), (512, 128, 400)):
        ours = np.asarray(losses.mel_spectrogram(jnp.asarray(real), 16000, n_fft, hop, win, 80))
        ref = _torch_mel(torch.from_numpy(real), n_fft, 80, 16000, hop, win, 0.0, None).numpy().transpose(0, 2, 1)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-5)  # measured 2e-6 (fp32 FFTs)
    m_r = losses.mel_spectrogram(jnp.asarray(real), 16000, 1024, 256, 1024, 80)
    m_f = losses.mel_spectrogram(jnp.asarray(fake), 16000, 1024, 256, 1024, 80)
    t_r = _torch_mel(torch.from_numpy(real), 1024, 80, 16000, 256, 1024, 0.0, None)
    t_f = _torch_mel(torch.from_numpy(fake), 1024, 80, 16000, 256, 1024, 0.0, None)
    np.testing.assert_allclose(float(losses.mel_loss(m_r, m_f)), float(F.l1_loss(t_r, t_f)), rtol=1e-5)

    outs_r = [rng.standard_normal((2, n)).astype(np.float32) for n in (5, 9)]
    outs_g = [rng.standard_normal((2, n)).astype(np.float32) for n in (5, 9)]
    fm_r = [[rng.standard_normal((2, 3, n)).astype(np.float32) for n in (7, 4)] for _ in range(2)]
    fm_g = [[rng.standard_normal((2, 3, n)).astype(np.float32) for n in (7, 4)] for _ in range(2)]
    tr = [torch.from_numpy(x) for x in outs_r]
    tg = [torch.from_numpy(x) for x in outs_g]
    ref_d = sum(torch.mean((1 - r) ** 2) + torch.mean(g**2) for r, g in zip(tr, tg))
    ref_g = sum(torch.mean((1 - g) ** 2) for g in tg)
    ref_fm = sum(
        torch.mean(torch.abs(torch.from_numpy(r) - torch.from_numpy(g)))
        for dr, dg in zip(fm_r, fm_g)
        for r, g in zip(dr, dg)
    )
    np.testing.assert_allclose(float(losses.discriminator_loss(outs_r, outs_g)), float(ref_d), rtol=1e-6)
    np.testing.assert_allclose(float(losses.generator_adversarial_loss(outs_g)), float(ref_g), rtol=1e-6)
    np.testing.assert_allclose(float(losses.feature_matching_loss(fm_r, fm_g)), float(ref_fm), rtol=1e-6)

    pred = rng.standard_normal((2, 6)).astype(np.float32)
    dur = rng.integers(1, 9, (2, 6)).astype(np.int32)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    ref_dur = F.mse_loss(
        torch.from_numpy(pred)[torch.from_numpy(mask)],
        torch.log(torch.from_numpy(dur).float() + 1)[torch.from_numpy(mask)],
    )
    np.testing.assert_allclose(float(losses.duration_loss(pred, dur, mask)), float(ref_dur), rtol=1e-6)


def test_segments_are_aligned_and_deterministic():
    """Unit frame i of a segment comes with samples [hop*i, hop*(i+1)) of its recording; a batch is a
    function of (seed, step); run lengths of the deduplicated units add up to the segment."""
    hop = TINY_G.hop
    t = 30
    audio = np.repeat(np.arange(t, dtype=np.float32), hop)  # sample value = frame index
    u = Utterance("x", audio, {"hubert": np.arange(t) % 7})
    s = SegmentSampler([u], TINY_G, 8, 4, seed=5)
    b = s.batch(3)
    for row in range(4):
        start = int(b["audio"][row, 0])
        np.testing.assert_array_equal(b["audio"][row].reshape(8, hop)[:, 0], np.arange(start, start + 8))
        np.testing.assert_array_equal(b["units"][row], np.arange(start, start + 8) % 7)
    np.testing.assert_array_equal(s.batch(3)["audio"], b["audio"])
    uniq, dur, mask = dedup_runs(np.array([[1, 1, 2, 2, 2, 1, 3, 3]]))
    np.testing.assert_array_equal(uniq[0, :4], [1, 2, 1, 3])
    np.testing.assert_array_equal(dur[0], [2, 3, 1, 2, 0, 0, 0, 0])
    assert mask.sum() == 4


def _tiny_cfg(out_dir, **kw) -> VocoderTrainConfig:
    base = dict(
        model=TINY_G,
        discriminators=TINY_D,
        loss=LossConfig(gan_start=2),
        checkpoint=VocoderCheckpointConfig(every=2, keep=5),
        steps=6,
        log_every=1,
        eval_every=0,
        out_dir=str(out_dir),
        progress=False,
        devices=1,
    )
    base.update(kw)
    return VocoderTrainConfig(**base)


def test_a_few_steps_reduce_the_mel_loss():
    """On one fixed tiny batch, 12 steps (6 mel-only, 6 with the discriminators) reduce the mel L1."""
    cfg = _tiny_cfg(
        "unused", loss=LossConfig(gan_start=6), optim=dataclasses.replace(VocoderTrainConfig().optim, lr=2e-3)
    )
    tx = vstep.make_optimizer(cfg)
    mesh = vstep.make_mesh()
    full, warm = vstep.jit_steps(cfg, tx, mesh)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = jax.device_put(vstep.init_state(cfg, tx), rep)
    rng = np.random.default_rng(0)
    t = 6
    tone = np.sin(2 * np.pi * 220 * np.arange(t * cfg.model.hop) / 16000).astype(np.float32) * 0.5
    units = rng.integers(0, 100, (8, t)).astype(np.int32)
    b = {"units": units, "pitch": np.zeros_like(units), "style": np.zeros_like(units)}
    b.update(speaker=np.zeros(8, np.int32), gstyle=np.zeros(8, np.int32), audio=np.tile(tone, (8, 1)))
    b["uniq"], b["dur"], b["dur_mask"] = dedup_runs(units)
    b = jax.device_put(b, vstep.batch_sharding(mesh))
    mels = []
    for s in range(12):
        state, m = (full if s >= 6 else warm)(state, b)
        mels.append(float(m["mel_l1"]))
        assert all(np.isfinite(float(v)) for v in m.values())
    assert float(m["d_loss"]) > 0
    assert mels[-1] < 0.8 * mels[0], mels


def _manifest(tmp_path) -> Path:
    wavs = sorted(DATA.glob("*.wav"))
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"audio": str(w)}) + "\n" for w in wavs))
    return path


def _cli_args(cfg: VocoderTrainConfig, manifest: Path) -> list[str]:
    import yaml

    from spiritlm_jax.config import to_dict

    d = to_dict(cfg)
    d["data"]["manifest"] = [str(manifest)]
    d["data"]["eval_manifest"] = [str(manifest)]
    path = Path(cfg.out_dir + ".yaml")
    path.write_text(yaml.safe_dump(d))
    return ["--config", str(path)]


def _metrics(run: Path) -> dict:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "mel_l1" in r:
            out[r["step"]] = r
    return out


@pytest.mark.slow
def test_sigkill_resume_is_exact_and_export_round_trips(tmp_path):
    """A run SIGKILLed after its step-4 checkpoint and re-run continues exactly like an uninterrupted
    run (every loss of steps 5-6 and every final parameter, optimizer moment and spectral-norm vector);
    the run's vocoder/ loads, and its export to generator.pt + config.json converts back
    (hifigan_from_pt) to identical audio. All three runs are `python -m spiritlm_jax.train_vocoder`
    subprocesses on one CPU device (the same numerics)."""
    from spiritlm_jax.vocoder_training.loop import latest_state

    manifest = _manifest(tmp_path)
    data = VocoderDataConfig(manifest=(str(manifest),), eval_manifest=(str(manifest),), batch_size=4, segment_frames=6)
    gan = LossConfig(gan_start=0)  # every step a full GAN step (one compilation per run)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "spiritlm_jax.train_vocoder"]
    ref_cfg = _tiny_cfg(tmp_path / "ref", data=data, loss=gan, eval_every=6)  # eval (end only) changes no state
    r = subprocess.run(cmd + _cli_args(ref_cfg, manifest), env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]

    killed = _tiny_cfg(tmp_path / "killed", data=data, loss=gan)
    args = _cli_args(killed, manifest)
    proc = subprocess.Popen(cmd + args + ["steps=1000"], env=env, cwd=ROOT)  # still running when killed
    ck = Path(killed.out_dir) / "checkpoints" / "4"
    deadline = time.time() + 300
    while not (ck / "_CHECKPOINT_METADATA").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ck.is_dir(), "the killed run never reached its step-4 checkpoint"
    r = subprocess.run(cmd + args, env=env, cwd=ROOT, capture_output=True, text=True)  # the same command: resumes
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout
    ref_m, got_m = _metrics(Path(ref_cfg.out_dir)), _metrics(Path(killed.out_dir))
    assert _metric_steps(Path(killed.out_dir)) == list(range(1, 7))  # replayed steps logged once
    for s in (5, 6):
        for k in ("mel_l1", "d_loss", "g_adv", "g_fm", "dur_loss"):
            np.testing.assert_allclose(got_m[s][k], ref_m[s][k], rtol=1e-6, err_msg=f"step {s} {k}")
    ref_state, _ = latest_state(ref_cfg.out_dir)
    got_state, _ = latest_state(killed.out_dir)
    for a, b in zip(jax.tree.leaves(ref_state), jax.tree.leaves(got_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)

    # export -> converter -> identical audio
    from spiritlm_jax.speech.vocoder import Vocoder
    from tools.convert_weights import hifigan_from_pt, hifigan_to_pt

    voc = Vocoder.load(Path(ref_cfg.out_dir) / "vocoder")
    assert hifigan_to_pt.main(["--src", ref_cfg.out_dir, "--out", str(tmp_path / "release")]) == 0
    rel = tmp_path / "release"
    cfg_json = json.loads((rel / "config.json").read_text())
    assert cfg_json["num_embeddings"] == TINY_G.num_embeddings and cfg_json["model_in_dim"] == TINY_G.model_in_dim
    sd = torch.load(rel / "generator.pt", weights_only=True)["generator"]
    assert "conv_pre.weight_g" in sd and "ups.0.weight_v" in sd and "dur_predictor.conv1.0.weight" in sd
    back = Vocoder.load(hifigan_from_pt.convert(rel, tmp_path / "back"))
    units = np.random.default_rng(2).integers(0, 100, 40)
    for dur_pred in (False, True):
        a = voc.vocode(units, dur_pred=dur_pred)
        b = back.vocode(units, dur_pred=dur_pred)
        np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() > 0
    # the same export from the vocoder directory (weights only): equal audio up to the weight-norm fold
    assert hifigan_to_pt.main(["--src", str(Path(ref_cfg.out_dir) / "vocoder"), "--out", str(tmp_path / "rel2")]) == 0
    back2 = Vocoder.load(hifigan_from_pt.convert(tmp_path / "rel2", tmp_path / "back2"))
    np.testing.assert_allclose(back2.vocode(units, dur_pred=False), voc.vocode(units, dur_pred=False), atol=1e-6)


def test_resume_refuses_a_changed_architecture_and_resume_false(tmp_path):
    """A run directory with checkpoints: another architecture or checkpoint.resume=false is a config
    error (exit 2) before any training."""
    from spiritlm_jax.train_vocoder import main

    manifest = _manifest(tmp_path)
    data = VocoderDataConfig(manifest=(str(manifest),), batch_size=2, segment_frames=4)
    cfg = _tiny_cfg(tmp_path / "run", data=data, steps=1, loss=LossConfig(gan_start=5))
    args = _cli_args(cfg, manifest)
    assert main(args) == 0
    assert main(args + ["steps=2", "model.embedding_dim=8", "model.dur_predictor_params.encoder_embed_dim=8"]) == 2
    assert main(args + ["steps=2", "checkpoint.resume=false"]) == 2
    assert main(args + ["steps=2"]) == 0


def test_the_demo_vocoder_ships_small_is_found_by_demo_runs_and_speaks(tmp_path):
    """The shipped demo vocoder (tools/build_demo_vocoder.py) is a few MB; an LM run on the demo corpus
    copies it in and names it in bundle.yaml (so `generate --checkpoint runs/demo` speaks without
    flags); on a held-out recording's units (tests/data/vm-intro.wav, in the corpus' eval split) it
    gives audio of the units' length, at speech level, unclipped, whose re-tokenization gives back most
    of the units (docs/vocoder_training.md has the measured numbers)."""
    from spiritlm_jax.bundle.manifest import read_manifest
    from spiritlm_jax.data.pipeline import DEMO_CORPUS
    from spiritlm_jax.speech.audio import load_audio
    from spiritlm_jax.speech.kmeans import MelUnitTokenizer
    from spiritlm_jax.speech.vocoder import Vocoder
    from spiritlm_jax.training.config import TrainConfig
    from spiritlm_jax.training.run_dir import write_run_dir

    shipped = DEMO_CORPUS / "vocoder"
    size = sum(p.stat().st_size for p in shipped.rglob("*") if p.is_file())
    assert 0 < size < 3_000_000, size
    run = tmp_path / "run"
    write_run_dir(TrainConfig(out_dir=str(run)), run)
    assert read_manifest(run).vocoder == "vocoder"
    voc = Vocoder.load(run / "vocoder")
    tok = MelUnitTokenizer(DEMO_CORPUS / "quantizer")
    wav = load_audio(DATA / "vm-intro.wav")
    units = tok.encode_units(wav)["hubert"]
    audio = voc.vocode(units, dur_pred=False)
    assert len(audio) == len(units) * 640
    rms, rms_orig = float(np.sqrt(np.mean(audio**2))), float(np.sqrt(np.mean(wav**2)))
    assert rms_orig / 3 < rms < rms_orig * 3 and np.abs(audio).max() < 0.999
    again = tok.encode_units(audio)["hubert"]
    agreement = float(np.mean(again == units[: len(again)]))
    assert agreement > 0.5, agreement
    predicted = voc.vocode(units)  # durations from the predictor, as generation uses it
    assert 0.5 < len(predicted) / len(audio) < 2.0


def _cli(tmp_path, name: str, **kw) -> list[str]:
    manifest = _manifest(tmp_path)
    data = VocoderDataConfig(manifest=(str(manifest),), batch_size=2, segment_frames=4)
    kw = {"data": data, "loss": LossConfig(gan_start=100), **kw}  # mel-only steps: one small compilation
    return _cli_args(_tiny_cfg(tmp_path / name, **kw), manifest)


def _metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_policy_is_the_lm_trainers(tmp_path):
    """The LM trainer's run-directory rules (run_guard): an optimizer change on resume needs
    checkpoint.allow_changes (then recorded); checkpoint.fresh=true deletes this trainer's files only
    and starts at step 0; a run already past `steps` is refused."""
    from spiritlm_jax.train_vocoder import main

    run = tmp_path / "run"
    args = _cli(tmp_path, "run", steps=2)
    assert main(args) == 0
    assert main(args + ["steps=3", "optim.lr=0.001"]) == 2  # not recorded, nothing written
    assert not (run / "config_changes.jsonl").exists() and _metric_steps(run) == [1, 2]
    assert main(args + ["steps=3", "optim.lr=0.001", "checkpoint.allow_changes=true"]) == 0
    rec = json.loads((run / "config_changes.jsonl").read_text())
    assert rec["step"] == 2 and rec["changes"]["optim.lr"] == {"old": 2e-4, "new": 1e-3}
    assert main(args + ["steps=1", "optim.lr=0.001"]) == 2  # at step 3 already
    (run / "notes.txt").write_text("mine")
    assert main(args + ["steps=1", "checkpoint.fresh=true"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1"]
    assert _metric_steps(run) == [1] and (run / "notes.txt").read_text() == "mine"
    assert not (run / "config_changes.jsonl").exists()


def test_a_broken_newest_checkpoint_is_moved_aside_and_metrics_are_not_repeated(tmp_path, capsys):
    """A newest checkpoint that cannot be restored is named, moved to broken_checkpoints/ and the
    previous one resumed; the metrics of the replayed steps are written once."""
    from spiritlm_jax.train_vocoder import main

    run = tmp_path / "run"
    args = _cli(tmp_path, "run", steps=4)
    assert main(args) == 0
    for f in (run / "checkpoints" / "4" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\0" * 16)  # damaged on disk
    capsys.readouterr()
    assert main(args + ["steps=5"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {run / 'checkpoints' / '4'} cannot be restored" in out
    assert f"resumed from {run / 'checkpoints'} at step 2" in out
    assert (run / "broken_checkpoints" / "4").is_dir()
    assert _metric_steps(run) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("what", ["loss", "state"])
def test_a_non_finite_loss_or_state_stops_before_saving(tmp_path, monkeypatch, capsys, what):
    """A NaN loss (or a NaN parameter at a checkpoint step) stops the run with exit 1, naming the last
    good checkpoint; nothing is saved for that step, and the vocoder/ of the last good one stays."""
    from spiritlm_jax.train_vocoder import main

    real = vstep.jit_steps

    def poisoned(cfg, tx, mesh, uf=None):
        full, warm = real(cfg, tx, mesh, uf)
        calls = [0]

        def warm_nan(state, batch):
            calls[0] += 1
            state, m = warm(state, batch)
            if calls[0] == 4 and what == "loss":
                m = {**m, "mel_l1": jnp.float32(jnp.nan)}
            if calls[0] == 4 and what == "state":
                state = {**state, "g": jax.tree.map(lambda x: x * jnp.nan, state["g"])}
            return state, m

        return full, warm_nan

    monkeypatch.setattr(vstep, "jit_steps", poisoned)
    run = tmp_path / "run"
    assert main(_cli(tmp_path, "run", steps=6)) == 1
    err = capsys.readouterr().err
    assert f"Last good checkpoint: {run / 'checkpoints' / '2'}" in err
    assert ("mel_l1 is nan at step 4" if what == "loss" else "not finite after step 4") in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2"]
    from spiritlm_jax.speech.vocoder import Vocoder

    assert _finite_tree(Vocoder.load(run / "vocoder").params)


def _finite_tree(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree))


def test_unit_feature_loss_is_on_the_tokenizers_own_frames(tmp_path, monkeypatch, capsys):
    """loss.unit_features compares the features the log-mel k-means tokenizer quantizes: frame_log_mel
    equals log(speech.features.mel_power + 1e-6) (librosa) within 1e-4 (measured 5e-7), on the frames
    [640 i, 640 i + 720) of a segment; loss.unit_consistency's nearest centroid is the tokenizer's unit
    and its cross-entropy equals torch's; the trainer logs both, and refuses them for a non-mel tokenizer."""
    from spiritlm_jax.speech.audio import load_audio
    from spiritlm_jax.speech.features import mel_power
    from spiritlm_jax.train_vocoder import main

    wav = load_audio(DATA / "vm-intro.wav")[: 640 * 20]
    for n_mels, fmin, fmax in ((40, 0.0, None), (24, 50.0, 4000.0)):
        ref = np.log(mel_power(wav, n_mels, fmin, fmax) + 1e-6)
        ours = np.asarray(losses.frame_log_mel(jnp.asarray(wav[None]), 16000, 720, 640, n_mels, fmin, fmax))[0]
        assert ours.shape == ref.shape == (19, n_mels)
        np.testing.assert_allclose(ours, ref, atol=1e-4)
    # the re-tokenization cross-entropy: its argmax is the tokenizer's assignment (the recording's own
    # CMVN), and it equals torch's cross-entropy over minus squared centroid distances (rtol 1e-5)
    from spiritlm_jax.data.pipeline import DEMO_CORPUS
    from spiritlm_jax.speech.kmeans import MelUnitTokenizer
    from spiritlm_jax.vocoder_training import data as vdata

    tok = MelUnitTokenizer(DEMO_CORPUS / "quantizer")
    units = tok.encode_units(wav)["hubert"]
    st = vdata.feature_stats(wav, 40, 0.0, None)
    feats = (np.asarray(losses.frame_log_mel(jnp.asarray(wav[None]), 16000, 720, 640, 40))[0] - st[0]) / st[1]
    ce, acc = losses.unit_consistency_loss(jnp.asarray(feats[None]), tok.centroids, jnp.asarray(units[None]))
    assert float(acc) == 1.0 and len(units) == len(feats) == 19
    other = np.roll(units, 3)
    ce2, acc2 = losses.unit_consistency_loss(jnp.asarray(feats[None]), tok.centroids, jnp.asarray(other[None]))
    d2 = torch.cdist(torch.from_numpy(feats).double(), torch.tensor(np.array(tok.centroids), dtype=torch.float64)) ** 2
    for got, u in ((ce, units), (ce2, other)):
        ref = F.cross_entropy(-d2, torch.from_numpy(np.asarray(u, np.int64)))
        np.testing.assert_allclose(float(got), float(ref), rtol=1e-5)
    assert float(acc2) < 0.5 and float(ce2) > float(ce)

    run = tmp_path / "run"
    assert main(_cli(tmp_path, "run", steps=2) + ["loss.unit_features=45", "loss.unit_consistency=20"]) == 0
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in (r for r in recs if "mel_l1" in r):
        assert np.isfinite(r["unit_l1"]) and r["unit_l1"] > 0 and np.isfinite(r["unit_ce"]) and 0 <= r["unit_acc"] <= 1
    import types

    from spiritlm_jax.vocoder_training import data as vdata

    class HubertLike:  # a tokenizer whose features are not librosa frames (as base:/expressive:)
        features = types.SimpleNamespace(name="hubert")

    monkeypatch.setattr(vdata, "make_tokenizer", lambda spec: HubertLike())
    capsys.readouterr()
    assert main(_cli(tmp_path, "other", steps=1) + ["loss.unit_features=45"]) == 2
    assert "loss.unit_features needs a log-mel or MFCC k-means tokenizer" in capsys.readouterr().err
