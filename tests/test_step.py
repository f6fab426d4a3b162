"""One optimizer step (harken.step): its loss, what it skips, and what it does out of memory."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harken import data, step
from harken.step import Learner, StepSettings
from harken.train import build

from conftest import ldc_config


def _learner(tmp_path: Path, **settings: object) -> tuple[Learner, list[data.Batch]]:
    """A small model's learner and two batches of LDC93S1 (one and two samples)."""
    config = ldc_config(tmp_path, epochs=1, n_hidden=16)
    run = build(config, log=lambda _: None)
    run.learner.settings = replace(StepSettings.of(config), train_batch_size=2, **settings)  # type: ignore[arg-type]
    split = data.load_split("train", config.data, run.alphabet, config.features, log=lambda _: None)
    one = data.collate([split.dataset[0]])
    two = data.collate([split.dataset[0], split.dataset[0]])
    return run.learner, [one, two]


def out_of_memory_above(monkeypatch: pytest.MonkeyPatch, samples: int) -> None:
    real = step.ctc_losses

    def losses(learner: Learner, batch: data.Batch) -> torch.Tensor:
        if len(batch) > samples:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return real(learner, batch)

    monkeypatch.setattr(step, "ctc_losses", losses)


def test_a_step_returns_the_mean_loss_and_changes_the_weights(tmp_path: Path) -> None:
    learner, (one, two) = _learner(tmp_path)
    before = [p.detach().clone() for p in learner.model.parameters()]
    loss, skipped = step.optimizer_step(learner, [two], "epoch 1, batch 1", print)
    assert loss is not None and math.isfinite(loss) and loss > 0 and skipped == []
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.model.parameters(), strict=True))


def test_out_of_memory_names_the_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    learner, (_, two) = _learner(tmp_path)
    out_of_memory_above(monkeypatch, 1)
    with pytest.raises(step.OutOfMemory, match=r"training 2 samples at a time \(epoch 3, batch 4\): lower "
                       r"--train_batch_size \(now 2.*--auto_batch_size"):  # fmt: skip
        step.optimizer_step(learner, [two], "epoch 3, batch 4", print)


def test_auto_batch_size_trains_in_pieces_to_the_same_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, (_, two) = _learner(tmp_path / "whole")
    expected, _ = step.optimizer_step(whole, [two], "", print)
    pieces, (_, two) = _learner(tmp_path / "pieces", auto_batch_size=True)
    out_of_memory_above(monkeypatch, 1)
    logs: list[str] = []
    loss, _ = step.optimizer_step(pieces, [two], "epoch 1, batch 1", logs.append)
    assert pieces.pieces == 2 and len(logs) == 1 and "in 2 pieces of at most 1 samples" in logs[0]
    assert loss == pytest.approx(expected, rel=1e-5)


def test_a_piece_whose_loss_is_not_finite_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    learner, (one, two) = _learner(tmp_path)
    real = step.ctc_losses

    def losses(learner: Learner, batch: data.Batch) -> torch.Tensor:
        values = real(learner, batch)
        return values * math.nan if len(batch) == 1 else values

    monkeypatch.setattr(step, "ctc_losses", losses)
    loss, skipped = step.optimizer_step(learner, [one, two], "", print)
    assert loss is not None and math.isfinite(loss) and skipped == one.indices


def test_the_placeholder_batch_counts_as_no_sample() -> None:
    batch = step.placeholder(ldc_config(Path("."), epochs=1).features)
    assert len(batch) == 0 and batch.lengths.tolist() == [1]
