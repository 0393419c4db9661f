"""A training run directory is a bundle: the run's config, the text tokenizer files and the speech
tokenizer of its corpus are copied in, and bundle.yaml (paths relative to the run) says where the LM
(the latest checkpoint), the tokenizer and the speech tokenizer are; the run can be moved and used
from any cwd.

    <run>/config.yaml  <run>/bundle.yaml  <run>/tokenizer.model (+ HF tokenizer files)
    <run>/speech_tokenizer/  (a copy of the corpus' k-means quantizer; a HuBERT one is referenced)
    <run>/vocoder/  (a copy of the corpus' vocoder/ when it ships one for its units, as the demo corpus does)
    <run>/checkpoints/  <run>/metrics.jsonl  <run>/tensorboard/  <run>/summary.json
"""

from __future__ import annotations

import shutil
from pathlib import Path

from spiritlm_jax.bundle.load import HUBERT_MARKER
from spiritlm_jax.bundle.manifest import BundleManifest, decide_expressive, write_manifest
from spiritlm_jax.bundle.text_tokenizer import copy_tokenizer_files
from spiritlm_jax.bundle.train_layout import CHECKPOINTS_DIR
from spiritlm_jax.config import save_config
from spiritlm_jax.data.pipeline import corpus_speech_tokenizer
from spiritlm_jax.model.config import SPLASH_BLOCK_KEYS
from spiritlm_jax.run_guard import RunDirPolicy

SPEECH_TOKENIZER_DIR = "speech_tokenizer"
VOCODER_DIR = "vocoder"  # a corpus' own vocoder for its units (<corpus>/vocoder/), copied into the run

# The LM trainer's files in a run directory (checkpoint.fresh=true deletes these and nothing else).
# shape_keys: a change makes the checkpoint unusable (an error). free_keys: may change on resume
# without checkpoint.allow_changes, as they do not change what a step computes (`steps` too, while
# the learning rate of the steps to come stays the same: training/loop.py). Any other change needs
# checkpoint.allow_changes=true and is recorded in config_changes.jsonl.
RUN_POLICY = RunDirPolicy(
    tool_files=(
        CHECKPOINTS_DIR,
        "metrics.jsonl",
        "tensorboard",
        "summary.json",
        "config.yaml",
        "bundle.yaml",
        SPEECH_TOKENIZER_DIR,
    ),
    shape_keys=tuple(
        f"model.{k}"
        for k in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "tie_embeddings")
    )
    + ("model.param_dtype",),
    free_keys=(
        "log_every",
        "eval_every",
        "eval_batches",
        "out_dir",
        "distributed",
        "progress",
        "checkpoint",
        "mesh",
        "init",
        "model.attention",
        *(f"model.{k}" for k in SPLASH_BLOCK_KEYS),
        "model.remat",
        "model.loss_chunk",
        "model.scan_unroll",
        "model.init_std",
        "data.read_threads",
        "data.prefetch",
        "compile",
    ),
    checkpoints=CHECKPOINTS_DIR,
)


def write_run_dir(cfg, out_dir: Path) -> BundleManifest:
    """config.yaml, tokenizer files, the corpus' speech tokenizer and bundle.yaml (process 0 only)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    copy_tokenizer_files(cfg.data.tokenizer_path, out_dir)
    speech = corpus_speech_tokenizer(cfg.data)
    speech_ref = None
    if speech is not None and (speech / HUBERT_MARKER).is_file():
        speech_ref = str(speech.absolute())  # HuBERT-sized: referenced, not copied
    elif speech is not None:
        dest = out_dir / SPEECH_TOKENIZER_DIR
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(speech, dest)
        speech_ref = SPEECH_TOKENIZER_DIR
    vocoder_ref = None
    if (cfg.data.corpus_dir / VOCODER_DIR).is_dir():
        dest = out_dir / VOCODER_DIR
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(cfg.data.corpus_dir / VOCODER_DIR, dest)
        vocoder_ref = VOCODER_DIR
    manifest = BundleManifest(
        expressive=decide_expressive(out_dir, cfg.data.expressive),
        lm=CHECKPOINTS_DIR,
        tokenizer=".",
        speech_tokenizer=speech_ref,
        vocoder=vocoder_ref,
    )
    write_manifest(out_dir, manifest)
    return manifest
