"""The learning rate schedule: what rate each optimizer step uses.

``constant`` is DeepSpeech's: ``--learning_rate`` until ``--reduce_lr_on_plateau`` lowers it. ``cosine``
warms up linearly from near zero over ``--warmup_epochs`` (Adam's first steps, with its moment estimates
still empty, otherwise take the largest updates of the run), then follows a half cosine down to
``--min_learning_rate`` at the end of the last epoch (small steps late in training, where a constant rate
makes the dev loss jump from epoch to epoch). The rate is a function of where training stands (epoch and
batch), so a resumed run continues on the same curve.
"""

from __future__ import annotations

import math

import torch

from harken.config import TrainConfig


def learning_rate(config: TrainConfig, epoch: int, batch: int, batches: int) -> float:
    """The rate for the step that starts at ``batch`` of ``batches`` in ``epoch`` (0-based)."""
    if config.learning_rate_schedule == "constant":
        return config.learning_rate
    done = epoch + (batch + 1) / max(1, batches)  # epochs trained once this step is taken
    peak, floor = config.learning_rate, config.min_learning_rate
    if done <= config.warmup_epochs:
        return peak * done / config.warmup_epochs
    span = max(1e-9, config.epochs - config.warmup_epochs)
    fraction = min(1.0, (done - config.warmup_epochs) / span)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * fraction))


def apply(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = value
