from __future__ import annotations

import math
from pathlib import Path

import pytest

from harken.summary import ProgressBar, Summaries, plot_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_MAGIC and header[12:16] == b"IHDR"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


@pytest.mark.parametrize("with_dev", [True, False])
def test_plot_history_writes_a_png(tmp_path: Path, with_dev: bool) -> None:
    history = [
        {"epoch": float(e), "train_loss": 100.0 / e} | ({"dev_loss": 120.0 / e} if with_dev else {})
        for e in range(1, 6)
    ]
    target = tmp_path / "plots" / "loss.png"
    assert plot_history(history, target) == target
    assert target.stat().st_size > 1000
    assert target.read_bytes().startswith(PNG_MAGIC)
    assert png_size(target) == (700, 400)  # figsize 7 x 4 at 100 dpi
    assert sorted(p.name for p in target.parent.iterdir()) == ["loss.png"]  # no temporary file left


def test_plot_history_with_dev_loss_on_some_epochs_only(tmp_path: Path) -> None:
    history = [
        {"epoch": 1.0, "train_loss": 50.0},
        {"epoch": 2.0, "train_loss": 40.0, "dev_loss": 45.0},
        {"epoch": 3.0, "train_loss": 30.0},
    ]
    target = tmp_path / "loss.png"
    assert plot_history(history, target) == target
    assert target.read_bytes().startswith(PNG_MAGIC)


def test_plot_history_replaces_an_old_plot(tmp_path: Path) -> None:
    target = tmp_path / "loss.png"
    target.write_bytes(b"old")
    plot_history([{"epoch": 1.0, "train_loss": 3.0}], target)
    assert target.read_bytes().startswith(PNG_MAGIC)


def test_plot_history_without_history(tmp_path: Path) -> None:
    target = tmp_path / "loss.png"
    assert plot_history([], target) is None
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_plot_file_has_ordinary_permissions(tmp_path: Path) -> None:
    import os
    import stat

    target = tmp_path / "loss.png"
    plot_history([{"epoch": 1.0, "train_loss": 3.0}], target)
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def read_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_summaries_write_a_tensorboard_event_file(tmp_path: Path) -> None:
    directory = tmp_path / "summaries"
    notes: list[str] = []
    with Summaries(directory, log=notes.append) as summaries:
        summaries.scalar("loss/train", 2.5, 1)
        summaries.scalar("loss/train", 1.5, 2)
        summaries.scalar("loss/dev", math.nan, 2)  # not finite: skipped
        summaries.scalar("loss/dev", math.inf, 3)
        summaries.scalar("loss/dev", 3.0, 4)
    assert notes == []
    events = list(directory.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    assert read_scalars(directory) == {"loss/train": [(1, 2.5), (2, 1.5)], "loss/dev": [(4, 3.0)]}


def test_progress_bar_disabled_is_a_no_op(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar("Training", 10, enabled=False)
    with bar as entered:
        assert entered is bar
        entered.advance()
        entered.advance(3, loss=1.25)
    assert not bar.enabled
    assert bar._progress is None
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_bar_with_nothing_to_do_is_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar("Empty", 0) as bar:
        bar.advance()
    assert not bar.enabled and bar._progress is None
    assert capsys.readouterr().out == ""


def test_progress_bar_enabled_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar("Epoch 1", 5, enabled=True, done=1) as bar:
        bar.advance(2, loss=3.5)
        bar.advance(1, loss=math.nan)
        assert bar._progress is not None
        task = bar._progress.tasks[0]
        assert task.completed == 4 and task.total == 5
        assert task.fields["info"] == ""  # a non-finite loss is not shown
    assert "Epoch 1" in capsys.readouterr().out
