"""``logprob_chunk`` (issue 17 item 2): training from chunked log-probs equals training from the full logits."""

import pytest
import torch

from neggrad.config import ConfigError, build_config
from tests.test_frontier_train import PARITY, run


@pytest.mark.parametrize(
    "extra",
    [
        [PARITY],  # on-policy: the training forward is the old policy
        [PARITY, "beta=0.04", "entropy_coef=0.01"],  # KL reference pass and the entropy bonus's gradient
        [PARITY, "num_iterations=2", "llds.enabled=true"],  # the no-grad old-policy pass, then off-policy steps
        ["zero_variance.all_wrong=rl_zvp"],  # token advantages from the entropy
    ],
    ids=["grpo", "kl+entropy", "llds_2iter", "rl_zvp"],
)
def test_chunked_run_equals_the_full_logits_run(tmp_path, extra):
    full, _, w_full = run(tmp_path / "full", *extra, steps=3)
    chunked, _, w_chunk = run(tmp_path / "chunked", *extra, "logprob_chunk=7", steps=3)
    assert len(full) == len(chunked) == 3
    for a, b in zip(full, chunked, strict=True):
        for key in ("loss/total", "loss/policy", "policy/entropy", "kl/ref", "grad/norm", "policy/ppo_kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    # AdamW (lr 1e-3) moves a parameter with a near-zero gradient by up to lr whatever its size, so float-rounding
    # differences of the gradient can show as ~1e-5 in the weights: 1/20 of one step is the tolerance
    for key in w_full:
        torch.testing.assert_close(w_chunk[key], w_full[key], rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("method", ["method=nthr", "thr.enabled=true"])
def test_strategies_that_read_logits_refuse_it(method):
    with pytest.raises(ConfigError, match="logprob_chunk"):
        build_config({}, [method, "logprob_chunk=64"])
