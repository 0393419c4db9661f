"""Log-likelihood of continuations given prompts: the primitive of every likelihood-pair benchmark.

`score(model, params, prompts, continuations)` returns, per pair, the summed log-probability of the
continuation tokens and their count (for the paper's length normalisation). Pairs are right-padded
into bucketed [B, T] batches (one compiled shape per bucket); padding carries segment id 0, so it
never influences real tokens.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.buckets import pow2_bucket
from spiritlm_jax.model.decode import PROMPT_BUCKET_MIN, check_context_length
from spiritlm_jax.model.llama import Llama


@functools.partial(jax.jit, static_argnames=("model",))
def _token_logprobs(model: Llama, params, tokens_bt, segment_ids_bt):
    """log p(tokens[t+1] | tokens[:t+1]) for every position: [B, T-1]."""
    logits_btv = model.apply({"params": params}, tokens_bt, None, segment_ids_bt)
    logp_btv = jax.nn.log_softmax(logits_btv[:, :-1], axis=-1)
    return jnp.take_along_axis(logp_btv, tokens_bt[:, 1:, None], axis=-1)[..., 0]


def score(
    model: Llama,
    params,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """(sum of continuation log-probs [N], continuation lengths [N]) for N prompt/continuation pairs.

    Each prompt must hold at least one token (e.g. BOS) so the first continuation token is predicted.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        if len(p) == 0:
            raise ValueError(f"pair {i}: the prompt is empty (it needs at least a BOS token)")
        if len(c) == 0:
            raise ValueError(f"pair {i}: the continuation is empty")
        check_context_length(
            len(p), len(c), model.cfg.max_seq_len, what=f"pair {i}: the prompt", new="continuation tokens"
        )
    n = len(prompts)
    sums = np.zeros(n, np.float64)
    lens = np.array([len(c) for c in continuations], np.int64)
    order = np.argsort([len(p) + len(c) for p, c in zip(prompts, continuations)])  # similar lengths together
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        t = pow2_bucket(max(len(prompts[i]) + len(continuations[i]) for i in idx), PROMPT_BUCKET_MIN)
        tokens = np.zeros((batch_size, t), np.int32)
        seg = np.zeros((batch_size, t), np.int32)
        for row, i in enumerate(idx):
            seq = list(prompts[i]) + list(continuations[i])
            tokens[row, : len(seq)] = seq
            seg[row, : len(seq)] = 1
        lp = np.asarray(_token_logprobs(model, params, jnp.asarray(tokens), jnp.asarray(seg)))
        for row, i in enumerate(idx):
            p, c = len(prompts[i]), len(continuations[i])
            sums[i] = lp[row, p - 1 : p - 1 + c].astype(np.float64).sum()
    return sums, lens
