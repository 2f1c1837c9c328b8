"""lr_scheduler_type: transformers' schedules by name (TRL's key), after neggrad's warm-up; constant and cosine keep
the rates of the hand-written schedule they replaced (resume with a new budget: test_faults.py)."""

import math

import pytest
import torch
from transformers import get_scheduler

from neggrad.config import ConfigError, build_config
from neggrad.trainer.loop import lr_lambda, train
from tests.test_train import tiny


def _old_lr_lambda(config, total_steps):
    """neggrad's schedule before transformers' names: linear warm-up, then constant or cosine decay to 0."""

    def factor(step):
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        if config.lr_scheduler_type == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("warmup", [0, 3])
def test_constant_and_cosine_keep_the_rates_of_the_old_schedule(schedule, warmup):
    config = build_config({}, [f"lr_scheduler_type={schedule}", f"warmup_steps={warmup}"])
    for total in (1, 10, 37):
        new, old = lr_lambda(config, total), _old_lr_lambda(config, total)
        assert [new(step) for step in range(total + 1)] == [old(step) for step in range(total + 1)]  # bit for bit


@pytest.mark.parametrize(
    ("schedule", "kwargs"),
    [("linear", {}), ("cosine_with_min_lr", {"min_lr_rate": 0.1}), ("cosine_with_min_lr", {"min_lr": 1e-5})],
)
def test_a_named_schedule_is_transformers_after_the_warm_up(schedule, kwargs):
    config = build_config(
        {"lr_scheduler_kwargs": kwargs}, [f"lr_scheduler_type={schedule}", "warmup_steps=2", "learning_rate=1e-4"]
    )
    factor = lr_lambda(config, 20)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-4)
    reference = get_scheduler(
        schedule, opt, num_warmup_steps=2, num_training_steps=20, scheduler_specific_kwargs=kwargs
    )
    assert [factor(s) for s in range(2)] == [1 / 3, 2 / 3]  # neggrad's warm-up: no step at rate 0
    assert [factor(s) for s in range(2, 21)] == [reference.lr_lambdas[0](s) for s in range(2, 21)]
    assert factor(20) == pytest.approx(0.1 if kwargs else 0.0)  # min_lr 1e-5 of a peak of 1e-4: 0.1


def test_a_missing_or_unknown_schedule_argument_is_one_line_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr("neggrad.trainer.loop.load_policy", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ConfigError, match=r"^lr_scheduler_type=cosine_with_min_lr .*min_lr_rate") as caught:
        train(tiny("lr_scheduler_type=cosine_with_min_lr"), tmp_path)
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"^lr_scheduler_type=linear with lr_scheduler_kwargs=\{'power': 2\}"):
        train(build_config({"lr_scheduler_kwargs": {"power": 2}}, ["lr_scheduler_type=linear"]), tmp_path)
    with pytest.raises(ConfigError, match=r"^lr_scheduler_type: Input should be 'constant'"):
        build_config({}, ["lr_scheduler_type=reduce_lr_on_plateau"])
