"""The record of a ``harken adapt`` run: each step's result as it finishes (``adapt.json`` in the output
folder, what a re-run resumes from), the table printed at the end and ``report.json``.

``adapt.json`` also holds the run's inputs (the options, and digests of the text and the CSVs): an output
folder that holds another run's results is refused, naming the first input that differs, so that a re-run
never mixes two runs' steps.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harken.adaptation_inputs import AdaptError
from harken.storage import atomic_write

STATE_FILE = "adapt.json"
REPORT_FILE = "report.json"
LOCK_FILE = ".adapt.lock"  # held while a run works on the folder (adaptation_resume.locked)
BASE_DIGESTS = ("checkpoint_dir_digest", "model_digest")  # the file the base model was loaded from
FORMAT = "harken-adapt"
VERSION = 1
# The steps in order, with the name the table gives each.
LABELS = {
    "base": "base model",
    "scorer": "+ scorer",
    "tuned": "+ tuned alpha/beta",
    "fine-tuned": "+ fine-tuned",
}


@dataclass(frozen=True)
class Rates:
    wer: float
    cer: float
    clips: int


@dataclass
class StepResult:
    step: str  # a key of LABELS
    seconds: float
    dev: Rates | None = None  # None: no dev audio to measure on
    test: Rates | None = None  # None: no --test_csv
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> StepResult:
        rates = {name: Rates(**values[name]) if values.get(name) else None for name in ("dev", "test")}
        return cls(values["step"], float(values["seconds"]), details=values.get("details", {}), **rates)


class RunState:
    """``adapt.json``: the inputs of the run an output folder belongs to and its finished steps."""

    def __init__(self, output: Path, inputs: dict[str, Any]) -> None:
        self.path = output / STATE_FILE
        self.inputs = inputs
        self.steps: dict[str, StepResult] = {}
        self.facts: dict[str, Any] = {}  # what the run found out before its steps (data, sizes)

    @classmethod
    def open(cls, output: Path, inputs: dict[str, Any]) -> RunState:
        """The state of the run ``inputs`` describe in ``output``: empty for a new run, its finished steps
        for a re-run. AdaptError when ``output`` holds something else (another run, other files)."""
        state = cls(output, inputs)
        if output.exists() and not output.is_dir():
            raise AdaptError(f"--output {output}: a file, not a folder")
        if not state.path.is_file():
            if output.is_dir() and any(p.name != LOCK_FILE for p in output.iterdir()):
                raise AdaptError(
                    f"--output {output}: a folder with other files in it; give a new or empty one"
                )
            return state
        try:
            stored = json.loads(state.path.read_text(encoding="utf-8"))
            assert stored.get("format") == FORMAT
        except (ValueError, AssertionError, OSError):
            raise AdaptError(f"--output {output}: {STATE_FILE} there is not a harken adapt record") from None
        different = first_difference(stored.get("inputs", {}), inputs)
        if different is not None:
            raise AdaptError(
                f"--output {output}: holds another run's results ({different}); give another --output, "
                "or the same inputs and options to resume that run"
            )
        state.steps = {name: StepResult.from_json(v) for name, v in stored.get("steps", {}).items()}
        state.facts = stored.get("facts", {})
        return state

    def done(self, step: str) -> StepResult | None:
        return self.steps.get(step)

    def record(self, result: StepResult) -> None:
        self.steps[result.step] = result
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        content = {
            "format": FORMAT,
            "version": VERSION,
            "inputs": self.inputs,
            "facts": self.facts,
            "steps": {name: asdict(result) for name, result in self.steps.items()},
        }
        with atomic_write(self.path, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)


def first_difference(stored: dict[str, Any], given: dict[str, Any]) -> str | None:
    """The first input that differs between two runs, as "--name was A, now B"; None when none does."""
    for name in sorted(set(stored) | set(given)):
        if stored.get(name) != given.get(name):
            if name in BASE_DIGESTS and name not in stored:
                return f"the base model of --{name.removesuffix('_digest')} was not recorded (an older run)"
            if name in BASE_DIGESTS:
                return f"the base model of --{name.removesuffix('_digest')} changed"
            what = "the file's contents" if name.endswith("_digest") else f"--{name}"
            if name.endswith("_digest"):
                return f"{what} of --{name.removesuffix('_digest')} changed"
            return f"{what} was {stored.get(name)!r}, now {given.get(name)!r}"
    return None


# --- what the user reads -------------------------------------------------------------------------------


def _percent(rates: Rates | None, which: str) -> str:
    if rates is None:
        return "-"
    value = getattr(rates, which)
    return f"{value:.1%}" if math.isfinite(value) else "-"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table(steps: list[StepResult]) -> str:
    """The steps as a plain-text table: dev (and test) WER and CER, and the time each took."""
    has_test = any(step.test is not None for step in steps)
    header = ["step", "dev WER", "dev CER"] + (["test WER", "test CER"] if has_test else []) + ["time"]
    rows = [header]
    for step in steps:
        label = LABELS[step.step] + (f" ({step.details['label']})" if step.details.get("label") else "")
        cells = [label, _percent(step.dev, "wer"), _percent(step.dev, "cer")]
        if has_test:
            cells += [_percent(step.test, "wer"), _percent(step.test, "cer")]
        rows.append([*cells, _duration(step.seconds)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(_cells(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cells(row: list[str], widths: list[int]) -> list[str]:
    """A row's cells padded to their columns: the first to the left, the figures to the right."""
    return [
        cell.ljust(w) if i == 0 else cell.rjust(w)
        for i, (cell, w) in enumerate(zip(row, widths, strict=True))
    ]


def write_report(output: Path, state: RunState, result: dict[str, Any]) -> Path:
    """``report.json``: the inputs, what the run found, every step and what the folder holds."""
    steps = [state.steps[name] for name in LABELS if name in state.steps]
    content = {
        "format": f"{FORMAT}-report",
        "version": VERSION,
        "inputs": state.inputs,
        "data": state.facts,
        "steps": [{"label": LABELS[s.step], **asdict(s)} for s in steps],
        "result": result,
    }
    path = output / REPORT_FILE
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2)
    return path
