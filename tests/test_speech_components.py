"""Every speech component kind goes through the one component I/O (spiritlm_jax.io with the spec each
speech module defines): params + config files round-trip exactly, and a params tree or directory that
does not fit its config is refused with an error naming the parameter."""

import dataclasses

import jax
import numpy as np
import pytest

from spiritlm_jax.config import save_config
from spiritlm_jax.io import PARAMS_DIR, load_component, save_component, tree_shapes
from spiritlm_jax.speech.f0_vqvae import F0_VQVAE_SPEC, F0VQVAEConfig
from spiritlm_jax.speech.fcpe import FCPE_SPEC, FCPEConfig
from spiritlm_jax.speech.hifigan import DurPredictorConfig, HifiGanConfig
from spiritlm_jax.speech.hubert import STANDARD_50HZ, HubertConfig
from spiritlm_jax.speech.quantizer import KMEANS_FILE, KMEANS_SPEC, MLP_QUANTIZER_SPEC, KMeansConfig, MLPQuantizerConfig
from spiritlm_jax.speech.style import STYLE_SPEC, StyleConfig
from spiritlm_jax.speech.tokenizer import SPEECH_TOKENIZER_SPEC
from spiritlm_jax.speech.vocoder import VOCODER_SPEC

HUBERT = HubertConfig(
    conv_layers=((16, 10, 5), (16, 3, 2)),
    hidden=32,
    num_layers=2,
    num_heads=2,
    ffn=64,
    pos_conv_kernel=8,
    pos_conv_groups=4,
    output_layer=2,
)
MLP = MLPQuantizerConfig(vocab_size=20, dim=32, upstream_dim=32)
STYLE = StyleConfig(encoder=dataclasses.replace(HUBERT, conv_layers=STANDARD_50HZ[:2]), proj_size=8, num_labels=5)
VOCODER = HifiGanConfig(
    embedding_dim=8,
    num_speakers=2,
    num_styles=3,
    upsample_rates=(4, 4),
    upsample_kernel_sizes=(8, 8),
    upsample_initial_channel=16,
    resblock_kernel_sizes=(3,),
    resblock_dilation_sizes=((1, 3),),
    dur_predictor_params=DurPredictorConfig(8, 8, 3, 0.0),
)

# (spec, configs, a config that gives other shapes for the same files, the parameter that then differs)
CASES = {
    "speech tokenizer": (
        SPEECH_TOKENIZER_SPEC,
        {"hubert.yaml": HUBERT, "quantizer.yaml": MLP},
        {"hubert.yaml": HUBERT, "quantizer.yaml": dataclasses.replace(MLP, vocab_size=30)},
        "quantizer/linear_0/bias",
    ),
    "HuBERT only": (
        SPEECH_TOKENIZER_SPEC,
        {"hubert.yaml": HUBERT},
        {"hubert.yaml": dataclasses.replace(HUBERT, ffn=48)},
        "hubert/layers_0/fc1/bias",
    ),
    "MLP quantizer": (
        MLP_QUANTIZER_SPEC,
        {"quantizer.yaml": MLP},
        {"quantizer.yaml": dataclasses.replace(MLP, vocab_size=30)},
        "quantizer/linear_0/bias",
    ),
    "k-means": (
        KMEANS_SPEC,
        {KMEANS_FILE: KMeansConfig(k=7, dim=3, features={"type": "log_mel", "n_mels": 3})},
        {KMEANS_FILE: KMeansConfig(k=8, dim=3)},
        "centroids",
    ),
    "FCPE": (
        FCPE_SPEC,
        {"fcpe.yaml": FCPEConfig(n_mels=16, hidden_dims=32, n_layers=1, out_dims=24)},
        {"fcpe.yaml": FCPEConfig(n_mels=16, hidden_dims=32, n_layers=1, out_dims=12)},
        "cent_table",
    ),
    "F0 VQ-VAE": (
        F0_VQVAE_SPEC,
        {"f0_vqvae.yaml": F0VQVAEConfig(width=8, depth=2, l_bins=8)},
        {"f0_vqvae.yaml": F0VQVAEConfig(width=8, depth=2, l_bins=6)},
        "codebook_0",
    ),
    "style encoder": (
        STYLE_SPEC,
        {"style.yaml": STYLE},
        {"style.yaml": dataclasses.replace(STYLE, num_labels=6)},
        "classifier/bias",
    ),
    "vocoder": (
        VOCODER_SPEC,
        {"config.yaml": VOCODER},
        {"config.yaml": dataclasses.replace(VOCODER, num_speakers=3)},
        "spkr/embedding",
    ),
}


def _random_params(spec, configs, seed=0):
    rng = np.random.default_rng(seed)
    full = {n: configs.get(n) for n in spec.configs}
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), spec.abstract_params(full))


@pytest.mark.parametrize("name", sorted(CASES))
def test_component_round_trips_and_refuses_mis_shaped_params(tmp_path, name):
    spec, configs, other, param = CASES[name]
    params = _random_params(spec, configs)
    d = save_component(tmp_path / "c", spec, params, configs)
    loaded, cfgs = load_component(d, spec)
    assert {n: c for n, c in cfgs.items() if c is not None} == configs
    assert tree_shapes(loaded) == tree_shapes(params)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), b)
    with pytest.raises(FileExistsError, match="already exists"):  # never overwritten
        save_component(d, spec, params, configs)
    # params that do not fit the config: refused before anything is written, naming the parameter
    with pytest.raises(ValueError, match=f"parameter {param} has shape"):
        save_component(tmp_path / "bad", spec, _random_params(spec, other), configs)
    assert not (tmp_path / "bad" / PARAMS_DIR).exists()
    # a directory whose config no longer fits its params/: refused before restoring, naming the parameter
    for file, cfg in other.items():
        save_config(cfg, d / file)
    with pytest.raises(ValueError, match=f"{PARAMS_DIR} vs its config: parameter {param} has shape"):
        load_component(d, spec)
