"""The learning rate schedule: constant (DeepSpeech's) and cosine with warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from harken import schedule
from harken.config import TrainConfig
from harken.train import train

from conftest import ldc_config


def test_constant_is_the_learning_rate() -> None:
    config = TrainConfig(learning_rate=0.002)
    assert {schedule.learning_rate(config, e, b, 10) for e in range(5) for b in range(10)} == {0.002}


def test_cosine_warms_up_then_falls_to_the_floor() -> None:
    config = TrainConfig(
        learning_rate=0.001,
        learning_rate_schedule="cosine",
        warmup_epochs=2,
        min_learning_rate=1e-5,
        epochs=10,
    )
    rates = [schedule.learning_rate(config, e, b, 50) for e in range(10) for b in range(50)]
    assert rates[0] == pytest.approx(0.001 / 100)  # one step of 100 warm-up steps
    assert rates[99] == pytest.approx(0.001)  # the end of the warm-up: the peak
    assert all(a < b for a, b in zip(rates[:99], rates[1:100], strict=True))
    assert all(a >= b for a, b in zip(rates[99:-1], rates[100:], strict=True))
    assert rates[-1] == pytest.approx(1e-5)
    assert rates[99 + 200] == pytest.approx(1e-5 + (0.001 - 1e-5) / 2, rel=0.02)  # half way down
    assert schedule.learning_rate(config, 12, 0, 50) == pytest.approx(1e-5)  # more epochs than planned


def test_options_are_checked() -> None:
    with pytest.raises(
        ValueError, match="--reduce_lr_on_plateau works with --learning_rate_schedule constant"
    ):
        TrainConfig(learning_rate_schedule="cosine", reduce_lr_on_plateau=True)
    with pytest.raises(ValueError, match="--min_learning_rate 0.1: must be 0 to --learning_rate"):
        TrainConfig(learning_rate=0.01, min_learning_rate=0.1)


def test_training_follows_the_schedule_and_records_it(tmp_path: Path) -> None:
    config = ldc_config(tmp_path, epochs=4, n_hidden=16, learning_rate_schedule="cosine", warmup_epochs=1)
    result = train(config, log=lambda _: None)
    rates = [row["learning_rate"] for row in result.progress.history]
    # one sample, one step an epoch: the warm-up's only step is at the peak, then down to the floor
    assert rates[0] == pytest.approx(0.003) and rates[-1] == pytest.approx(1e-5)
    assert rates == sorted(rates, reverse=True)
