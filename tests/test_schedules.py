import math

import pytest
import torch

from gptlab.errors import ConfigError
from gptlab.schedules import build_scheduler, cosine_lr


def lrs_of(cfg: dict, total_steps: int, lr: float = 1e-3) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2, 2))], lr=lr)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    values = []
    for _ in range(total_steps + 1):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_cosine_values_at_warmup_start_peak_middle_and_end():
    lrs = lrs_of({"name": "cosine", "warmup_steps": 10, "min_lr": 1e-4}, total_steps=110)
    assert lrs[0] == pytest.approx(1e-3 / 10)  # warmup starts at lr / warmup_steps, not at 0
    assert lrs[4] == pytest.approx(1e-3 * 5 / 10)
    assert lrs[9] == pytest.approx(1e-3)  # peak at the end of warmup
    assert lrs[10] == pytest.approx(1e-3)  # decay starts from the peak
    assert lrs[60] == pytest.approx((1e-3 + 1e-4) / 2)  # halfway through the decay: the midpoint
    assert lrs[110] == pytest.approx(1e-4)  # ends at min_lr
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_warmup_ratio_and_default_min_lr():
    lrs = lrs_of({"name": "cosine", "warmup_ratio": 0.1, "min_lr": None}, total_steps=100)
    assert lrs[9] == pytest.approx(1e-3)
    assert lrs[100] == pytest.approx(1e-4)  # default min_lr: lr / 10


def test_min_lr_never_above_lr():
    assert max(lrs_of({"name": "cosine", "warmup_steps": 0, "min_lr": 1.0}, total_steps=20)) == pytest.approx(1e-3)


def test_constant():
    assert set(lrs_of({"name": "constant"}, total_steps=5)) == {1e-3}


def test_cosine_formula_stays_at_min_lr_after_the_end():
    assert cosine_lr(500, lr=1.0, min_lr=0.1, warmup_steps=0, total_steps=100) == pytest.approx(0.1)
    assert cosine_lr(50, lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=100) == pytest.approx(0.5)


def test_cosine_needs_a_finite_run():
    with pytest.raises(ConfigError, match="max_steps or trainer.max_epochs"):
        lrs_of({"name": "cosine", "warmup_steps": 1}, total_steps=math.inf)


def test_unknown_schedule():
    with pytest.raises(ConfigError, match="scheduler.name must be one of"):
        lrs_of({"name": "linear"}, total_steps=5)
