"""What a run shows its user: progress bars with an ETA, TensorBoard scalars, the loss plot."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harken.storage import atomic_write


class ProgressBar:
    """A rich progress bar (total known in advance) that does nothing when ``enabled`` is False."""

    def __init__(self, title: str, total: int, enabled: bool = True, done: int = 0) -> None:
        self.enabled = enabled and total > 0
        self._progress: Progress | None = None
        self._task: Any = None
        self._title, self._total, self._done = title, total, done

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self._title, total=self._total, completed=self._done, info=""
            )
        return self

    def advance(self, count: int = 1, loss: float | None = None) -> None:
        if self._progress is not None:
            info = f"loss {loss:.3f}" if loss is not None and math.isfinite(loss) else ""
            self._progress.update(self._task, advance=count, info=info)

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


class Summaries:
    """TensorBoard scalars under ``directory``; a no-op (with one warning) without tensorboard installed,
    and a silent no-op when not ``enabled`` (the processes of a distributed run other than rank 0)."""

    def __init__(self, directory: Path, log: Callable[[str], None] = print, enabled: bool = True) -> None:
        self.directory = directory
        self._writer: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log("note: TensorBoard summaries are off (pip install 'harken[tensorboard]' to write them)")
            return
        self._writer = SummaryWriter(log_dir=str(directory))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None and math.isfinite(value):
            self._writer.add_scalar(tag, value, step)

    def __enter__(self) -> Summaries:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()


def plot_history(history: Sequence[dict[str, float]], path: Path) -> Path | None:
    """A PNG of the training and dev loss per epoch (written atomically); None with no history."""
    if not history:
        return None
    from matplotlib.figure import Figure  # no pyplot: the process's plotting backend is left alone

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    axes.plot(epochs, [row["train_loss"] for row in history], marker=".", label="train loss")
    dev = [(row["epoch"], row["dev_loss"]) for row in history if "dev_loss" in row]
    if dev:
        axes.plot([e for e, _ in dev], [v for _, v in dev], marker=".", label="dev loss")
    axes.set_xlabel("epoch")
    axes.set_ylabel("CTC loss")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png")
    return path
