"""``harken adapt``: a base model and a domain's text (and a few of its recordings) in; out, a folder that
``harken transcribe`` and ``harken serve`` use as it is.

The steps, each timed and measured on the dev recordings (and on --test_csv, which nothing is chosen on):

1. **base**: the model as it is, no scorer (what ``transcribe`` does without one);
2. **+ scorer**: a KenLM scorer built from the text (``language_model.build``), its order and pruning
   chosen by the text's size (``adaptation_inputs.SCORER_SIZES``), with its default alpha and beta;
3. **+ tuned**: alpha and beta searched on the dev set (``tuning.search_pair``) and stored in the scorer;
4. **+ fine-tuned**: the model trained further on the recordings (``train.train``: every layer kept,
   ``--preset small_data``, docs/training.md's learning rate), measured with the tuned scorer and with a
   pair re-tuned for it; it replaces the base model only where it is better on the dev set.

The folder then holds ``model.pt`` (and ``model.onnx`` where the model exports), ``lm.scorer`` with the
chosen alpha and beta, ``report.json`` and ``adapt.json`` (the finished steps: re-running the command skips
them; an interrupted fine-tune resumes as ``harken train`` does, from ``finetune/``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from harken import adaptation_inputs as inputs
from harken import adaptation_resume as resume
from harken import checkpoint, manifest
from harken.adaptation_inputs import AdaptError, DevSplit, DomainText
from harken.adaptation_report import LABELS, RunState, StepResult
from harken.adaptation_steps import WORDS_FILE, Steps
from harken.adaptation_steps import Heard as Heard  # bench/adapt.py uses these from here
from harken.adaptation_steps import hear as hear
from harken.adaptation_steps import measure as measure
from harken.alphabet import Alphabet
from harken.config import option, require
from harken.inference import Model
from harken.language_model import prune_counts
from harken.manifest import Sample
from harken.model import choose_device

Log = Callable[[str], None]
MODEL_FILES = (".tflite", ".pt", ".onnx")
# The least training audio measured to help (docs/adaptation.md, bench/adapt.py --sweep): on the kitchen
# example half a minute (16 clips) already took test WER from 74.4 % (base, tuned scorer) to 70.8 %; less
# was not measured, so less is not fine-tuned.
MIN_FINETUNE_MINUTES = 0.5


@dataclass(frozen=True)
class AdaptConfig:
    """``harken adapt``'s options."""

    text: Path = option(Path(), "the domain's text: one sentence a line (.txt, or .gz)", required=True)
    output: Path = option(Path(), "the folder to write (re-run the same command to resume)", required=True)
    checkpoint_dir: Path | None = option(None, "the base model: a harken checkpoint directory")
    model: Path | None = option(
        None, "the base model as a file: .tflite (DeepSpeech / Coqui), .pt, or .onnx (the scorer only)"
    )
    csv: Path | None = option(
        None,
        "recordings of the domain (a CSV manifest): dev data is split off unless --dev_csv is given (whole "
        "speakers when the CSV has a speaker, speaker_id or client_id column), the rest fine-tunes",
    )
    dev_csv: Path | None = option(None, "recordings to measure and tune on (default: split off --csv)")
    test_csv: Path | None = option(
        None, "recordings measured at every step and never chosen on: the honest figure in the report"
    )
    dev_fraction: float = option(0.2, "share of --csv split off as dev data when no --dev_csv is given")
    min_dev: int = option(10, "recordings the dev split takes at least")
    split_seed: int = option(1234, "seed of the dev split")
    order: int = option(0, "the scorer's n-gram order (0: by the text's size, docs/design.md)")
    prune: tuple[int, ...] = option(
        (), "lmplz --prune counts, e.g. '0 0 1' (default: by the text's size)", parse=prune_counts,
        metavar="COUNTS",
    )  # fmt: skip
    n_trials: int = option(100, "alpha/beta pairs tried on the dev set (each step that tunes)")
    epochs: int = option(60, "fine-tuning epochs (docs/training.md: 60 for minutes of speech)")
    learning_rate: float = option(0.001, "fine-tuning learning rate (docs/training.md)")
    train_batch_size: int = option(16, "fine-tuning batch size")
    min_finetune_minutes: float = option(
        MIN_FINETUNE_MINUTES,
        "training audio (minutes, after the dev split) below which the model is not fine-tuned: the "
        "scorer alone is adapted (docs/adaptation.md: the least measured to help, on synthetic speech)",
    )
    export_onnx: bool = option(True, "also write model.onnx (for serving without torch)")
    kenlm_bin: str = option("", "the folder holding KenLM's lmplz and build_binary (default: as lm build)")
    device: str = option("auto", "torch device: auto, cpu, cuda, cuda:1 ...")
    show_progressbar: bool = option(True, "show progress bars with an ETA")

    def __post_init__(self) -> None:
        if (self.checkpoint_dir is None) == (self.model is None):
            raise AdaptError("give the base model: one of --checkpoint_dir and --model")
        if self.model is not None and self.model.suffix.lower() not in MODEL_FILES:
            raise AdaptError(f"--model {self.model}: expected a .tflite, .pt or .onnx file")
        require(0 < self.dev_fraction < 1, "dev_fraction", self.dev_fraction, "in (0, 1)")
        require(self.min_dev >= 1, "min_dev", self.min_dev, "1 or more")
        require(self.order == 0 or 1 <= self.order <= 6, "order", self.order, "0 (automatic) or 1 to 6")
        require(self.n_trials >= 1, "n_trials", self.n_trials, "1 or more")
        require(self.epochs >= 1, "epochs", self.epochs, "1 or more")
        require(0 < self.learning_rate < 1, "learning_rate", self.learning_rate, "in (0, 1)")
        require(self.train_batch_size >= 1, "train_batch_size", self.train_batch_size, "1 or more")
        require(
            self.min_finetune_minutes >= 0, "min_finetune_minutes", self.min_finetune_minutes, "0 or more"
        )

    @property
    def base(self) -> Path:
        return self.model if self.model is not None else self.checkpoint_dir  # type: ignore[return-value]


@dataclass
class Plan:
    """What the checks found: the run's data, the scorer's size and whether it fine-tunes (and why not)."""

    config: AdaptConfig
    model: Model  # the base model, loaded
    text: DomainText
    split: DevSplit | None  # None: no recordings
    test: list[Sample]
    train_seconds: float
    order: int
    prune: tuple[int, ...]
    no_finetune: str  # why the model is not fine-tuned ("" when it is)

    @property
    def alphabet(self) -> Alphabet:
        return self.model.alphabet

    @property
    def dev(self) -> list[Sample]:
        return self.split.dev if self.split is not None else []


def prepare(config: AdaptConfig, log: Log = print) -> Plan:
    """Check every input and plan the run; AdaptError (one line) on what cannot work. Writes nothing."""
    base = config.base
    if not base.exists():
        raise AdaptError(f"--{'model' if config.model else 'checkpoint_dir'} {base}: no such file or folder")
    model = Model(base, device=str(choose_device(config.device)))
    text = inputs.read_text(config.text, model.alphabet)
    split = _split(config)
    test = inputs.read_recordings(config.test_csv, "test_csv")[0] if config.test_csv else []
    _refuse_overlap(config, split, test)
    train_seconds = inputs.seconds(split.train) if split is not None else 0.0
    order, prune = inputs.scorer_size(text.running_words)
    plan = Plan(
        config, model, text, split, test, train_seconds, config.order or order, config.prune or prune, ""
    )
    _check_scorer_options(plan)
    plan.no_finetune = _why_not_finetune(plan)
    _warn_dev(plan, log)
    return plan


def _refuse_overlap(config: AdaptConfig, split: DevSplit | None, test: list[Sample]) -> None:
    """AdaptError when --test_csv shares recordings with the training or dev data, or --dev_csv with
    the training data (measured on what it was chosen or trained on, a figure is not honest)."""
    train, dev = (split.train, split.dev) if split is not None else ([], [])
    data = " and ".join(f"--{n} {p}" for n, p in (("csv", config.csv), ("dev_csv", config.dev_csv)) if p)
    pairs = [(f"--test_csv {config.test_csv}", test, data, train + dev)]
    if config.dev_csv is not None:
        pairs.append((f"--dev_csv {config.dev_csv}", dev, f"--csv {config.csv}", train))
    for name, first, other, second in pairs:
        shared = inputs.overlap(first, second) if first and second else []
        if shared:
            raise AdaptError(
                f"{name}: {len(shared)} of its recordings are also in {other}, e.g. {shared[0]}; "
                "give recordings that are not trained or tuned on"
            )


def _check_scorer_options(plan: Plan) -> None:
    """--order, --prune and --kenlm_bin checked before anything is written (the scorer is built later)."""
    from harken import language_model

    if len(plan.prune) > plan.order:
        raise AdaptError(f"--prune {' '.join(map(str, plan.prune))}: more counts than --order {plan.order}")
    try:
        language_model.LmConfig(
            text=(plan.config.text,), output=plan.config.output / "lm.scorer", order=plan.order,
            prune=plan.prune, kenlm_bin=plan.config.kenlm_bin,
        )  # fmt: skip
        language_model.find_tools(plan.config.kenlm_bin)
    except (ValueError, language_model.ToolError) as error:
        raise AdaptError(str(error).splitlines()[0]) from None


def _warn_dev(plan: Plan, log: Log) -> None:
    """A note when dev transcripts are empty or have characters the model cannot spell."""
    empty = sum(1 for sample in plan.dev if not sample.transcript.strip())
    unspellable = [s for s in plan.dev if s.transcript.strip() and plan.alphabet.unknown(s.transcript)]
    if empty:
        log(f"warning: {empty} dev recordings have an empty transcript: their WER counts no words")
    if unspellable:
        shown = unspellable[0]
        log(
            f"warning: {len(unspellable)} dev transcripts have characters the model cannot spell, e.g. "
            f"{shown.path} ({plan.alphabet.unknown(shown.transcript)[0]!r}): no model can get them right"
        )


def _split(config: AdaptConfig) -> DevSplit | None:
    if config.csv is None and config.dev_csv is None:
        return None
    samples, speakers = inputs.read_recordings(config.csv, "csv") if config.csv else ([], None)
    if config.dev_csv is not None:
        return DevSplit(samples, inputs.read_recordings(config.dev_csv, "dev_csv")[0], "--dev_csv")
    return inputs.split_dev(samples, speakers, config.dev_fraction, config.min_dev, config.split_seed)


def _why_not_finetune(plan: Plan) -> str:
    config = plan.config
    if plan.split is None or not plan.split.train:
        return "no recordings to train on: adapting the scorer only"
    if config.base.suffix.lower() == ".onnx":
        return f"--model {config.base}: an .onnx file cannot be trained (give its checkpoint): scorer only"
    minutes = plan.train_seconds / 60
    if minutes < config.min_finetune_minutes:
        return (
            f"--csv {config.csv}: {minutes:.1f} min of training audio after the dev split, under "
            f"--min_finetune_minutes {config.min_finetune_minutes:g}: adapting the scorer only"
        )
    return ""


def fingerprint(config: AdaptConfig) -> dict[str, Any]:
    """What identifies a run: its options (output, device and progress aside) and its inputs' contents."""
    skipped = {"output", "device", "show_progressbar", "kenlm_bin", *resume.SETTINGS}
    found: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name in skipped:
            continue
        found[f.name] = str(value.resolve()) if isinstance(value, Path) else value
        if isinstance(value, tuple):
            found[f.name] = list(value)
        if isinstance(value, Path) and value.is_file() and f.name != "model":
            found[f"{f.name}_digest"] = inputs.digest(value)
    flag = "model" if config.model is not None else "checkpoint_dir"
    found[f"{flag}_digest"] = inputs.base_digest(config.checkpoint_dir, config.model)
    return found


def settings(config: AdaptConfig) -> dict[str, Any]:
    """The options a re-run may change (``adaptation_resume.SETTINGS``), as ``fingerprint`` records them."""
    found: dict[str, Any] = {"epochs": config.epochs, "n_trials": config.n_trials}
    found["export_onnx"] = config.export_onnx
    found["test_csv"] = str(config.test_csv.resolve()) if config.test_csv else None
    found["test_csv_digest"] = inputs.digest(config.test_csv) if config.test_csv else None
    return found


# --- the run ---------------------------------------------------------------------------------------------


def adapt(config: AdaptConfig, log: Log = print) -> RunState:
    """The whole of ``harken adapt``: check, then each step not yet done, then the folder's contents."""
    plan = prepare(config, log)
    identity = fingerprint(config)
    RunState.open(config.output, identity)  # another run's folder is refused before anything is written
    with resume.locked(config.output):
        state = RunState.open(config.output, identity)  # read again: now no other run can change it
        _describe(plan, log)
        redo = resume.changed_settings(state, settings(config), log)
        resume.forget_from(state, redo, log)
        resume.forget_from(state, resume.missing_output(state, _outputs(plan)), log)
        _write_data(plan, state)
        _run_steps(plan, state, log)
    return state


def _outputs(plan: Plan) -> dict[str, Callable[[], bool]]:
    """Whether each step's output is still in the folder (a step whose output is gone is redone)."""
    out = plan.config.output
    return {
        "scorer": (out / "lm.scorer").is_file,
        "tuned": (out / "lm.scorer").is_file,
        "fine-tuned": lambda: checkpoint.listing_any(out / "finetune"),
    }


def _order(plan: Plan) -> list[str]:
    """The steps this run takes, in order."""
    steps = ["base"] if plan.dev or plan.test else []
    steps += ["scorer"] + (["tuned"] if plan.dev else [])
    return steps + ([] if plan.no_finetune else ["fine-tuned"])


def _describe(plan: Plan, log: Log) -> None:
    text, split = plan.text, plan.split
    log(
        f"Text {text.path}: {text.sentences:,} sentences, {text.running_words:,} words "
        f"({text.distinct_words:,} distinct); scorer: order {plan.order}, "
        f"prune {' '.join(map(str, plan.prune))}"
    )
    if split is None:
        log("No recordings: nothing to measure on; the scorer keeps its default alpha and beta")
    else:
        log(
            f"Recordings: {len(split.train)} to train on ({plan.train_seconds / 60:.1f} min), "
            f"{len(split.dev)} dev ({split.how})" + (f", {len(plan.test)} test" if plan.test else "")
        )
    if plan.no_finetune:
        log(f"note: {plan.no_finetune}")


def _write_data(plan: Plan, state: RunState) -> None:
    """The dev split as CSVs in the output folder, and what the run found, in adapt.json."""
    folder = plan.config.output / "data"
    facts: dict[str, Any] = {"text": asdict(plan.text), "order": plan.order, "prune": list(plan.prune)}
    facts["text"]["path"] = str(plan.text.path)
    if not (folder / WORDS_FILE).is_file():
        inputs.write_words(plan.text.path, plan.alphabet, folder / WORDS_FILE)
    if plan.split is not None:
        for name, samples in (("train", plan.split.train), ("dev", plan.split.dev)):
            if samples:
                manifest.write_csv(folder / f"{name}.csv", samples)
        facts.update(
            train_clips=len(plan.split.train),
            train_minutes=round(plan.train_seconds / 60, 2),
            dev_clips=len(plan.split.dev),
            dev_split=plan.split.how,
        )
    facts.update(test_clips=len(plan.test), no_finetune=plan.no_finetune or None)
    state.facts.update(facts)  # what earlier runs recorded (model files, settings) stays
    state.save()


# --- the steps -------------------------------------------------------------------------------------------


def _run_steps(plan: Plan, state: RunState, log: Log) -> None:
    """Each step not done by an earlier run of the same command, its result recorded as it ends; then
    the folder's model, scorer defaults and report (``Steps.finish``)."""
    steps = Steps(plan, state, log)
    runs = {"base": steps.base, "scorer": steps.scorer, "tuned": steps.tuned, "fine-tuned": steps.finetune}
    order = [(name, runs[name]) for name in _order(plan)]
    for number, (name, run) in enumerate(order, start=1):
        title = f"Step {number}/{len(order)}: {LABELS[name]}"
        done = state.done(name)
        if done is not None:
            log(f"{title}: done by an earlier run ({done.seconds:.1f} s)")
            continue
        log(title)
        started = time.monotonic()
        try:
            dev, test, details = run()
        except BaseException:  # Ctrl-C or an error: the time spent counts when the step ends
            resume.carry(state, name, time.monotonic() - started)
            state.save()
            raise
        seconds = time.monotonic() - started + resume.take_carried(state, name)
        result = StepResult(name, round(seconds, 2), dev, test, details)
        state.record(result)
        log(f"  {_rates_line(result)}")
    steps.finish()


def _rates_line(result: StepResult) -> str:
    parts = [
        f"{name} WER {rates.wer:.1%}, CER {rates.cer:.1%} ({rates.clips} clips)"
        for name, rates in (("dev", result.dev), ("test", result.test))
        if rates is not None
    ]
    return "; ".join(parts or ["no recordings to measure on"]) + f"; {result.seconds:.1f} s"
