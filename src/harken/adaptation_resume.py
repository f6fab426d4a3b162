"""How a re-run of ``harken adapt`` picks up an output folder: the lock that keeps a second run out, the
options that may change between runs (and the steps each change redoes), the step outputs whose loss
redoes their step, and each step's time summed over the sessions it took.

The options in ``SETTINGS`` are not part of a run's identity (``adapt.json``'s "inputs"): --epochs may
grow (the fine-tune resumes to the new count), --n_trials, --test_csv and --export_onnx may change; each
redoes only the steps it affects, from the first of them on. Everything else (the data, the base model,
the scorer's size) still makes the folder another run's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harken.adaptation_inputs import AdaptError
from harken.adaptation_report import LOCK_FILE, RunState

# The options a re-run may change, and the first step each change redoes (None: only the model files).
SETTINGS: dict[str, str | None] = {
    "epochs": "fine-tuned",
    "n_trials": "tuned",
    "test_csv": "base",
    "test_csv_digest": "base",
    "export_onnx": None,
}
Log = Callable[[str], None]
STEPS = ("base", "scorer", "tuned", "fine-tuned")  # each step depends on the ones before it


@contextmanager
def locked(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``output`` (a lock file in it, created with the folder if need be);
    AdaptError at once when another process holds it. A POSIX record lock (``lockf``), not ``flock``: the
    data loader's forked workers would inherit an ``flock`` and hold the folder after the run."""
    import fcntl

    output.mkdir(parents=True, exist_ok=True)
    handle = open(output / LOCK_FILE, "a")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise AdaptError(
                f"--output {output}: another harken adapt is running on this folder (it holds "
                f"{output / LOCK_FILE}); wait for it to end"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock; the file stays (removing it would race a waiting run)


def changed_settings(state: RunState, settings: dict[str, Any], log: Log = print) -> str | None:
    """The first step (of ``SETTINGS``' steps) a change of settings since the last run redoes, recording
    the new settings in ``state``; drops the recorded model files when anything changed. AdaptError when
    --epochs shrinks below a fine-tune already run."""
    stored: dict[str, Any] | None = state.facts.get("settings")
    state.facts["settings"] = settings
    if stored is None:
        return None
    first: str | None = None
    order = STEPS
    for name, step in SETTINGS.items():
        if stored.get(name) == settings.get(name):
            continue
        if name == "epochs" and "fine-tuned" in state.steps and settings[name] < stored[name]:
            raise AdaptError(
                f"--epochs {settings[name]}: the folder's fine-tune already ran {stored[name]} epochs; "
                f"give {stored[name]} or more to keep it"
            )
        if not name.endswith("_digest"):
            log(f"--{name} was {stored.get(name)!r}, now {settings.get(name)!r}: redoing what it affects")
        state.facts.pop("model_files", None)
        if step is not None and (first is None or order.index(step) < order.index(first)):
            first = step
    if first == "fine-tuned" and "fine-tuned" in state.steps:  # the fine-tune goes on: its time adds up
        carry(state, "fine-tuned", state.steps["fine-tuned"].seconds)
    return first


def missing_output(state: RunState, outputs: dict[str, Callable[[], bool]]) -> str | None:
    """The first finished step whose output (``outputs``: step -> whether it is still there) is gone."""
    for step in STEPS:
        if step in state.steps and step in outputs and not outputs[step]():
            return step
    return None


def forget_from(state: RunState, first: str | None, log: Log) -> None:
    """Forget the finished steps from ``first`` on, so that this run redoes them."""
    if first is None:
        return
    later = [step for step in STEPS[STEPS.index(first) :] if step in state.steps]
    for step in later:
        del state.steps[step]
    if later:
        state.facts.pop("model_files", None)
        log(f"Redoing: {', '.join(later)}")
    state.save()


def carry(state: RunState, step: str, seconds: float) -> None:
    """Add ``seconds`` to the time ``step`` has taken in earlier sessions (counted in when it ends)."""
    carried = state.facts.setdefault("carried_seconds", {})
    carried[step] = round(carried.get(step, 0.0) + seconds, 2)


def take_carried(state: RunState, step: str) -> float:
    """The time ``step`` took in earlier sessions, forgotten now that it is counted in its result."""
    return float(state.facts.get("carried_seconds", {}).pop(step, 0.0))
