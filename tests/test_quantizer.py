"""HuBERT unit quantizers against PyTorch references written here from the published architecture:

- MLP (docs/reference.md, components: HuBERT): an nn.Sequential Linear/LeakyReLU/Linear/LeakyReLU/Linear, logits <= 1e-4
  (fp32 matmuls of O(1) values; reassociation is ~1e-6), units equal.
- Blank filling: the reference's loop `code[blank] = roll(code, 1)[blank]` run in torch, compared
  exactly with ours (numpy per utterance, and the batched JAX version inside jit).
- k-means: the reference KmeansModel's distance |x|^2 - 2 x C + |C|^2 and argmin, units equal.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spiritlm_jax.speech.quantizer import (
    KMeansQuantizer,
    MLPQuantizer,
    MLPQuantizerConfig,
    fill_blanks,
    fill_blanks_batched,
    mlp_units,
)


def torch_mlp(vocab, dim, upstream, seed=0):
    out, mid = vocab + 1, upstream - (vocab + 1)
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(dim, dim - mid // 4),
        torch.nn.LeakyReLU(),
        torch.nn.Linear(dim - mid // 4, dim - mid // 2),
        torch.nn.LeakyReLU(),
        torch.nn.Linear(dim - mid // 2, out),
    ).eval()


def params_of(seq) -> dict:
    return {
        f"linear_{i}": {"kernel": seq[i].weight.detach().numpy().T, "bias": seq[i].bias.detach().numpy()}
        for i in (0, 2, 4)
    }


def reference_fill(code: np.ndarray, blank: int) -> np.ndarray:
    """The reference's post-processing, verbatim in behaviour: roll until no blank (at most 10000 rounds)."""
    code = torch.from_numpy(np.asarray(code, np.int64)[None].copy())
    rounds = 0
    while (code == blank).any():
        rounds += 1
        code[code == blank] = torch.roll(code, 1)[code == blank]
        if rounds == 10000:
            break
    return code.numpy()[0]


@pytest.mark.parametrize("vocab, dim, upstream", [(500, 768, 768), (20, 64, 48)])
def test_mlp_matches_torch(vocab, dim, upstream):
    cfg = MLPQuantizerConfig(vocab_size=vocab, dim=dim, upstream_dim=upstream)
    ref = torch_mlp(vocab, dim, upstream)
    assert cfg.widths == (ref[0].out_features, ref[2].out_features, ref[4].out_features)
    x = np.random.default_rng(0).normal(size=(2, 37, dim)).astype(np.float32)
    ours = np.asarray(jax.jit(MLPQuantizer(cfg).apply)({"params": params_of(ref)}, x))
    with torch.no_grad():
        logits = ref(torch.from_numpy(x))
        ref_units = torch.log_softmax(logits, -1).argmax(-1).numpy()
    assert np.abs(ours - logits.numpy()).max() <= 1e-4
    for b in range(2):
        np.testing.assert_array_equal(mlp_units(ours[b], cfg.blank), reference_fill(ref_units[b], cfg.blank))


def test_real_size_widths():
    assert MLPQuantizerConfig().widths == (768 - 267 // 4, 768 - 267 // 2, 501)
    with pytest.raises(ValueError, match="non-positive widths"):
        MLPQuantizerConfig(vocab_size=500, dim=10, upstream_dim=768)


def test_fill_blanks_cases():
    b = 9
    assert fill_blanks(np.array([3, b, b, 4, b]), b).tolist() == [3, 3, 3, 4, 4]
    assert fill_blanks(np.array([b, b, 5, 6]), b).tolist() == [6, 6, 5, 6]  # leading blanks wrap around
    assert fill_blanks(np.array([b, b]), b).tolist() == [b, b]
    assert fill_blanks(np.array([], np.int64), b).tolist() == []
    with pytest.raises(ValueError, match="one utterance"):
        fill_blanks(np.zeros((2, 3)), b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=40))
def test_fill_blanks_equals_reference_loop(code):
    code = np.array(code)
    np.testing.assert_array_equal(fill_blanks(code, 4), reference_fill(code, 4))


def test_fill_blanks_batched_in_jit():
    rng = np.random.default_rng(1)
    blank, t = 5, 23
    lengths = np.array([23, 17, 1, 9, 4])
    code = rng.integers(0, blank + 1, size=(len(lengths), t))
    code[rng.random(code.shape) < 0.4] = blank
    code[3, :9] = blank  # all-blank item
    code[4, :2] = blank  # leading blanks: wrap within the item's 4 frames, not the padded row
    out = np.asarray(jax.jit(fill_blanks_batched, static_argnums=2)(jnp.asarray(code), jnp.asarray(lengths), blank))
    for i, n in enumerate(lengths):
        np.testing.assert_array_equal(out[i, :n], reference_fill(code[i, :n], blank))


def test_kmeans_matches_reference_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    c_kd = rng.normal(size=(50, 16)).astype(np.float32)
    x_btd = rng.normal(size=(3, 41, 16)).astype(np.float32)
    q = KMeansQuantizer(c_kd)
    # the reference KmeansModel: C = centers^T [d, K]; dist = |x|^2 - 2 x C + Cnorm; argmin
    x, c = torch.from_numpy(x_btd.reshape(-1, 16)), torch.from_numpy(c_kd.T.copy())
    dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ c + (c**2).sum(0, keepdim=True)
    ref = dist.argmin(1).numpy().reshape(3, 41)
    np.testing.assert_array_equal(q(x_btd), ref)
    np.testing.assert_array_equal(q(x_btd[0]), ref[0])
    assert q(np.zeros((0, 16))).shape == (0,)
    q2 = KMeansQuantizer.load(q.save(tmp_path / "km"))
    np.testing.assert_array_equal(q2.centroids, c_kd)
    assert KMeansQuantizer.load(tmp_path / "km").n_units == 50  # a k-means component directory


def test_kmeans_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\[K, D\]"):
        KMeansQuantizer(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        KMeansQuantizer(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="dimension 4"):
        KMeansQuantizer(np.zeros((3, 4)))(np.zeros((5, 3)))
    with pytest.raises(FileNotFoundError, match="missing"):
        KMeansQuantizer.load(tmp_path / "missing")
    KMeansQuantizer(np.zeros((3, 4))).save(tmp_path / "c")
    with pytest.raises(FileExistsError, match="already exists"):  # a saved quantizer is never overwritten
        KMeansQuantizer(np.zeros((3, 4))).save(tmp_path / "c")
