"""The schema of a vocoder training run (`VocoderTrainConfig`): what `python -m spiritlm_jax.train_vocoder`
reads from YAML and key=value overrides. The defaults are the small CPU demo vocoder
(tools/build_demo_vocoder.py); the published HiFi-GAN sizes are `HifiGanConfig()` / `DiscriminatorConfig()`."""

from __future__ import annotations

import dataclasses
from typing import Optional

from spiritlm_jax.aot import CompileConfig
from spiritlm_jax.speech.discriminators import DiscriminatorConfig
from spiritlm_jax.speech.hifigan import DurPredictorConfig, HifiGanConfig

# A small generator for 25 Hz units (x640 ladder) that trains on a CPU in well under an hour.
DEMO_GENERATOR = HifiGanConfig(
    num_embeddings=100,
    embedding_dim=64,
    multispkr=False,
    multistyle=False,
    upsample_rates=(5, 4, 4, 4, 2),
    upsample_kernel_sizes=(11, 8, 8, 8, 4),
    upsample_initial_channel=128,
    resblock_kernel_sizes=(3, 7),
    resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)),
    dur_predictor_params=DurPredictorConfig(encoder_embed_dim=64, var_pred_hidden_dim=64),
)
# Narrow MPD/MSD: the published layout with 1/8 (MPD) to 1/16 (MSD) of the channels and MSD kernels 11
# instead of 41 (XLA's CPU convolutions of the published MSD dominate a CPU step otherwise).
DEMO_DISCRIMINATORS = DiscriminatorConfig(
    mpd_channels=(16, 32, 64, 128, 128),
    msd_channels=(16, 16, 32, 32, 64, 64, 64),
    msd_kernels=(15, 11, 11, 11, 11, 11, 5),
    msd_groups=(1, 4, 8, 8, 8, 8, 1),
)


@dataclasses.dataclass(frozen=True)
class VocoderDataConfig:
    """Recordings and their units: manifests (units computed by `tokenizer`) and/or prepared corpora
    (their stored units, the audio read from each example's `audio` path)."""

    manifest: tuple[str, ...] = ()  # JSONL manifests of recordings ({"audio": path, "speaker"?, "style"?}), repeatable
    corpus: tuple[str, ...] = ()  # prepared corpus dirs (prepare's output): speech + aligned examples, repeatable
    eval_manifest: tuple[str, ...] = ()  # held-out recordings for the validation mel error (optional)
    eval_corpus: tuple[str, ...] = ()  # held-out prepared corpus dirs: their eval/ split, else all of them
    tokenizer: str = "mel:demo"  # the manifests' speech tokenizer: mel:DIR | mel:demo | base:DIR | expressive:DIR
    segment_frames: int = 10  # unit frames per training segment (x hop samples of audio)
    batch_size: int = 8  # segments per step (global; divides over the data-parallel devices)
    seed: int = 0  # segment sampling: step s draws its segments from rng(seed, s)
    eval_items: int = 8  # held-out recordings scored at each evaluation (whole utterances)


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """The log-mel spectrogram of the L1 loss, HiFi-GAN's: reflect padding (n_fft - hop) / 2, |STFT|, slaney mel
    filters, log(max(x, 1e-5))."""

    n_fft: int = 1024
    hop: int = 256
    win: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: Optional[float] = None  # None: sampling_rate / 2


@dataclasses.dataclass(frozen=True)
class VocoderOptimConfig:
    """AdamW for the generator and for the discriminators; lr x lr_decay every decay_every steps (exponential)."""

    lr: float = 2e-4
    b1: float = 0.8
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.01  # torch.optim.AdamW's default, as the reference
    lr_decay: float = 0.999
    decay_every: int = 100  # steps per lr_decay factor (the reference decays once per epoch)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    mel: float = 45.0  # L1 on log-mel
    feature_matching: float = 2.0  # L1 between discriminator feature maps of real and generated audio
    adversarial: float = 1.0  # least-squares GAN
    duration: float = 1.0  # MSE on log(1 + run length) of deduplicated units (0: predictor not trained)
    gan_start: int = 0  # steps of mel (+ duration) loss only before the discriminators join
    unit_features: float = 0.0  # L1 on the log-mel power a mel:DIR (log-mel/MFCC k-means) tokenizer quantizes
    # (its own 25 Hz frames, before CMVN); 0 = the published recipe. Keeps the resynthesis' units (demo: 45)
    unit_consistency: float = 0.0  # cross-entropy of the tokenizer's soft assignment of the generated frames
    # (log-mel k-means: softmax of minus squared centroid distances, the recording's CMVN) against the input units


@dataclasses.dataclass(frozen=True)
class VocoderCheckpointConfig:
    every: int = 200  # save every N steps (and at the last step)
    keep: int = 2  # checkpoints kept
    resume: bool = True  # continue from the newest readable checkpoint of out_dir when there is one
    fresh: bool = False  # delete this trainer's files in out_dir, start at step 0 (once: rerun without it to resume)
    allow_changes: bool = False  # resume although optimizer/loss/data settings differ from the checkpoint's (recorded)


@dataclasses.dataclass(frozen=True)
class VocoderTrainConfig:
    model: HifiGanConfig = DEMO_GENERATOR
    discriminators: DiscriminatorConfig = DEMO_DISCRIMINATORS
    data: VocoderDataConfig = VocoderDataConfig()
    mel: MelConfig = MelConfig()
    optim: VocoderOptimConfig = VocoderOptimConfig()
    loss: LossConfig = LossConfig()
    checkpoint: VocoderCheckpointConfig = VocoderCheckpointConfig()
    steps: int = 2000  # optimizer steps (each: one discriminator and one generator update)
    seed: int = 0  # parameter initialisation
    devices: int = -1  # data-parallel devices (the first N; -1 = all)
    log_every: int = 20  # metrics every N steps
    eval_every: int = 200  # validation mel error + TensorBoard audio/mel images every N steps (0: never)
    out_dir: str = "runs/vocoder"  # run directory: config.yaml, checkpoints/, vocoder/, metrics.jsonl, tensorboard/
    progress: bool = True  # progress bar
    compile: CompileConfig = CompileConfig()  # compile.topology set: compile the step for that TPU pod only (--help)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.data.segment_frames < 2:
            raise ValueError(f"data.segment_frames must be >= 2, got {self.data.segment_frames}")
        if self.data.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.data.batch_size}")
        if self.loss.duration and self.model.dur_predictor_params is None:
            raise ValueError("loss.duration > 0 but the model has no duration predictor (model.dur_predictor_params)")
