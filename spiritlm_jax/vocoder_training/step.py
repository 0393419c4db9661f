"""Train state and the jitted GAN step.

One step (as HiFi-GAN / speech-resynthesis): the generator makes `fake` from the segment's units;
the discriminators (MPD + MSD) take one AdamW step on the LSGAN loss of (real, fake); then the
generator takes one AdamW step on adversarial + feature matching (against the *updated*
discriminators) + 45 x log-mel L1 + the duration loss. `fake` is computed once: its vector-Jacobian
product carries the generator's gradient (jax.vjp), so the generator runs forward once per step.
Before `loss.gan_start` steps only the mel and duration losses train the generator (`warmup_step`).
With `loss.unit_features` > 0, an L1 on the speech tokenizer's own frame features (`UnitFeatures`,
from a log-mel/MFCC k-means tokenizer) joins the mel loss in both steps.
Batches are sharded over the "data" axis of the mesh (data parallel; parameters replicated).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spiritlm_jax.speech.discriminators import Discriminators, init_discriminators
from spiritlm_jax.speech.hifigan import CodeGenerator, DurationPredictor, init_params
from spiritlm_jax.speech.layers import valid_mask
from spiritlm_jax.vocoder_training import losses
from spiritlm_jax.vocoder_training import weight_norm as wn
from spiritlm_jax.vocoder_training.config import VocoderTrainConfig


@dataclasses.dataclass(frozen=True)
class UnitFeatures:
    """The frame grid and mel bands of a log-mel/MFCC k-means tokenizer (speech/features.py)."""

    n_fft: int
    hop: int
    n_mels: int
    fmin: float
    fmax: Optional[float]
    centroids: Optional[np.ndarray] = None  # [K, n_mels] for loss.unit_consistency (log-mel tokenizers)
    cmvn: bool = True  # the tokenizer normalises each recording (feat_mean / feat_std in the batch)


def _frame_features(cfg: VocoderTrainConfig, uf: UnitFeatures, audio_bt):
    return losses.frame_log_mel(audio_bt, cfg.model.sampling_rate, uf.n_fft, uf.hop, uf.n_mels, uf.fmin, uf.fmax)


def unit_consistency(cfg: VocoderTrainConfig, uf: Optional[UnitFeatures], fake, batch):
    """(cross-entropy, accuracy) of the tokenizer's soft assignment of the generated frames against the
    segment's units (losses.unit_consistency_loss); zeros when the loss is off."""
    if uf is None or uf.centroids is None or not cfg.loss.unit_consistency:
        return jnp.zeros(()), jnp.zeros(())
    feats = (_frame_features(cfg, uf, fake) - batch["feat_mean"][:, None]) / batch["feat_std"][:, None]
    return losses.unit_consistency_loss(feats, uf.centroids, batch["units"][:, : feats.shape[1]])


def unit_feature_loss(cfg: VocoderTrainConfig, uf: Optional[UnitFeatures], real, fake):
    if uf is None or not cfg.loss.unit_features:
        return jnp.zeros(())
    return losses.mel_loss(_frame_features(cfg, uf, real), _frame_features(cfg, uf, fake))


def _unit_metrics(cfg: VocoderTrainConfig, uf, unit, ce, acc) -> dict:
    out = {}
    if uf is not None and cfg.loss.unit_features:
        out["unit_l1"] = unit
    if uf is not None and uf.centroids is not None and cfg.loss.unit_consistency:
        out["unit_ce"], out["unit_acc"] = ce, acc
    return out


def make_optimizer(cfg: VocoderTrainConfig) -> optax.GradientTransformation:
    o = cfg.optim
    schedule = optax.exponential_decay(o.lr, o.decay_every, o.lr_decay)
    return optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)


def lr_at(cfg: VocoderTrainConfig, step: int) -> float:
    o = cfg.optim
    return float(o.lr * o.lr_decay ** (step / o.decay_every))


def init_state(cfg: VocoderTrainConfig, tx) -> dict[str, Any]:
    # weight-normed convs start at PyTorch's default init scale, as the reference's (weight_norm.py)
    g = wn.split(init_params(cfg.model, cfg.seed), gain=wn.TORCH_INIT_ROW_NORM)
    d, spectral = init_discriminators(cfg.discriminators, cfg.seed + 1)
    return {"g": g, "d": d, "spectral": spectral, "opt_g": tx.init(g), "opt_d": tx.init(d)}


def generate(cfg: VocoderTrainConfig, g_params, batch):
    """Audio [B, n * hop] of a batch's unit segments (ground-truth durations)."""
    units = batch["units"]
    lengths = jnp.full((units.shape[0],), units.shape[1], jnp.int32)
    audio, _, _ = CodeGenerator(cfg.model).apply(
        {"params": wn.merge(g_params)},
        units,
        lengths,
        batch["pitch"],
        batch["style"],
        batch["speaker"],
        batch["gstyle"],
        dur_pred=False,
    )
    return audio


def duration_loss(cfg: VocoderTrainConfig, g_params, batch):
    d = cfg.model.dur_predictor_params
    mask = batch["dur_mask"]
    emb = jnp.take(g_params["dict"]["embedding"], batch["uniq"], axis=0)
    log_dur = DurationPredictor(d.var_pred_hidden_dim, d.var_pred_kernel_size).apply(
        {"params": g_params["dur_predictor"]}, emb, valid_mask(mask.sum(1), mask.shape[1])
    )
    return losses.duration_loss(log_dur, batch["dur"], mask)


def log_mel(cfg: VocoderTrainConfig, audio_bt):
    m = cfg.mel
    return losses.mel_spectrogram(audio_bt, cfg.model.sampling_rate, m.n_fft, m.hop, m.win, m.n_mels, m.fmin, m.fmax)


def _halves(x):
    h = x.shape[0] // 2
    return x[:h], x[h:]


def _disc(cfg, d_params, spectral, real, fake):
    """Scores and feature maps of real and fake in one pass (one spectral-norm power iteration)."""
    (scores, fmaps), upd = Discriminators(cfg.discriminators).apply(
        {"params": d_params, "spectral": spectral},
        jnp.concatenate([real, fake], 0),
        update_stats=True,
        mutable=["spectral"],
    )
    s = [_halves(x) for x in scores]
    f = [[_halves(x) for x in fm] for fm in fmaps]
    real_s, fake_s = [a for a, _ in s], [b for _, b in s]
    real_f = [[a for a, _ in fm] for fm in f]
    fake_f = [[b for _, b in fm] for fm in f]
    return real_s, fake_s, real_f, fake_f, upd.get("spectral", spectral)


def train_step(cfg: VocoderTrainConfig, tx, uf: Optional[UnitFeatures], state, batch):
    """One discriminator + one generator update (module docstring)."""
    lw = cfg.loss
    real = batch["audio"]
    fake, g_vjp = jax.vjp(lambda gp: generate(cfg, gp, batch), state["g"])

    def d_loss_fn(d_params):
        real_s, fake_s, _, _, spectral = _disc(cfg, d_params, state["spectral"], real, jax.lax.stop_gradient(fake))
        return losses.discriminator_loss(real_s, fake_s), spectral

    (d_loss, spectral), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state["d"])
    d_upd, opt_d = tx.update(d_grads, state["opt_d"], state["d"])
    d_params = optax.apply_updates(state["d"], d_upd)

    def g_fake_loss(fake):
        real_s, fake_s, real_f, fake_f, spectral2 = _disc(cfg, d_params, spectral, real, fake)
        adv = losses.generator_adversarial_loss(fake_s)
        fm = losses.feature_matching_loss(jax.lax.stop_gradient(real_f), fake_f)
        mel = losses.mel_loss(log_mel(cfg, real), log_mel(cfg, fake))
        unit = unit_feature_loss(cfg, uf, real, fake)
        ce, acc = unit_consistency(cfg, uf, fake, batch)
        total = lw.adversarial * adv + lw.feature_matching * fm + lw.mel * mel
        total = total + lw.unit_features * unit + lw.unit_consistency * ce
        return total, (adv, fm, mel, unit, ce, acc, spectral2)

    (_, (adv, fm, mel, unit, ce, acc, spectral)), d_fake = jax.value_and_grad(g_fake_loss, has_aux=True)(fake)
    (g_grads,) = g_vjp(d_fake)
    dur = jnp.zeros(())
    if lw.duration:
        dur, dur_grads = jax.value_and_grad(lambda gp: duration_loss(cfg, gp, batch))(state["g"])
        g_grads = jax.tree.map(lambda a, b: a + lw.duration * b, g_grads, dur_grads)
    g_upd, opt_g = tx.update(g_grads, state["opt_g"], state["g"])
    g_params = optax.apply_updates(state["g"], g_upd)
    g_total = lw.adversarial * adv + lw.feature_matching * fm + lw.mel * mel + lw.duration * dur
    g_total = g_total + lw.unit_features * unit + lw.unit_consistency * ce
    metrics = {"d_loss": d_loss, "g_adv": adv, "g_fm": fm, "mel_l1": mel, "dur_loss": dur, "g_loss": g_total}
    metrics.update(_unit_metrics(cfg, uf, unit, ce, acc))
    return {"g": g_params, "d": d_params, "spectral": spectral, "opt_g": opt_g, "opt_d": opt_d}, metrics


def warmup_step(cfg: VocoderTrainConfig, tx, uf: Optional[UnitFeatures], state, batch):
    """Generator only, mel (+ unit feature) + duration losses (before loss.gan_start)."""
    lw = cfg.loss
    real = batch["audio"]
    fake, g_vjp = jax.vjp(lambda gp: generate(cfg, gp, batch), state["g"])
    mel_real = log_mel(cfg, real)

    def fake_loss(f):
        mel, unit = losses.mel_loss(mel_real, log_mel(cfg, f)), unit_feature_loss(cfg, uf, real, f)
        ce, acc = unit_consistency(cfg, uf, f, batch)
        return lw.mel * mel + lw.unit_features * unit + lw.unit_consistency * ce, (mel, unit, ce, acc)

    (_, (mel, unit, ce, acc)), d_fake = jax.value_and_grad(fake_loss, has_aux=True)(fake)
    (grads,) = g_vjp(d_fake)
    dur = jnp.zeros(())
    if lw.duration:
        dur, dur_grads = jax.value_and_grad(lambda gp: duration_loss(cfg, gp, batch))(state["g"])
        grads = jax.tree.map(lambda a, b: a + lw.duration * b, grads, dur_grads)
    upd, opt_g = tx.update(grads, state["opt_g"], state["g"])
    z = jnp.zeros(())
    metrics = {
        "d_loss": z,
        "g_adv": z,
        "g_fm": z,
        "mel_l1": mel,
        "dur_loss": dur,
        "g_loss": lw.mel * mel + lw.unit_features * unit + lw.unit_consistency * ce + lw.duration * dur,
    }
    metrics.update(_unit_metrics(cfg, uf, unit, ce, acc))
    return {**state, "g": optax.apply_updates(state["g"], upd), "opt_g": opt_g}, metrics


def jit_steps(cfg: VocoderTrainConfig, tx, mesh, uf: Optional[UnitFeatures] = None):
    """(full step, warm-up step), jitted with the state donated; the batch is sharded over "data"."""
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    out = []
    for fn in (train_step, warmup_step):
        out.append(jax.jit(functools.partial(fn, cfg, tx, uf), donate_argnums=0, out_shardings=(rep, rep)))
    return tuple(out)


def batch_sharding(mesh):
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def make_mesh(devices: int = -1, pool=None):
    """A 1-D data-parallel mesh over the first `devices` of `pool` (default jax.devices(); -1: all)."""
    pool = list(pool) if pool is not None else jax.devices()
    if devices != -1 and not 1 <= devices <= len(pool):
        raise ValueError(f"devices={devices} but {len(pool)} are available")
    devs = pool if devices == -1 else pool[:devices]
    return jax.sharding.Mesh(np.asarray(devs), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
