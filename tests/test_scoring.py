"""score() equals a direct computation from the model's logits, one pair at a time (fp32, 1e-4
absolute on sums of ~10 log-probs; only batching/padding differs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiritlm_jax.evaluation.scoring import score
from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.llama import Llama, init_params

CFG = LlamaConfig(
    vocab_size=50, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64, dtype="float32", max_seq_len=64
)


def _direct(model, params, prompt, cont):
    seq = jnp.asarray([list(prompt) + list(cont)])
    logp = jax.nn.log_softmax(model.apply({"params": params}, seq)[0], -1)
    return sum(float(logp[len(prompt) - 1 + j, cont[j]]) for j in range(len(cont)))


def test_score_matches_direct_computation():
    model, params = Llama(CFG), init_params(CFG, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(0, 50, rng.integers(1, 12))) for _ in range(7)]
    conts = [list(rng.integers(0, 50, rng.integers(1, 9))) for _ in range(7)]
    sums, lens = score(model, params, prompts, conts, batch_size=3)
    for i in range(7):
        assert lens[i] == len(conts[i])
        assert abs(sums[i] - _direct(model, params, prompts[i], conts[i])) < 1e-4


def test_score_errors():
    model, params = Llama(CFG), init_params(CFG, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="prompt is empty"):
        score(model, params, [[]], [[1]])
    with pytest.raises(ValueError, match="continuation is empty"):
        score(model, params, [[1]], [[]])
    with pytest.raises(ValueError, match="2 prompts but 1"):
        score(model, params, [[1], [2]], [[1]])
