"""The steps of ``harken adapt`` (``adaptation.py`` plans and runs them): hearing the dev and test
recordings once per model, measuring decodings of them, and each step's work — the scorer's build, the
alpha/beta search, the fine-tune — then the folder's model files and report (``Steps.finish``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from harken import adaptation_inputs as inputs
from harken import checkpoint, features, tuning
from harken.adaptation_inputs import AdaptError
from harken.adaptation_report import LABELS, Rates, RunState, table, write_report
from harken.alphabet import Alphabet, ByteAlphabet
from harken.config import Config
from harken.decoder import BeamSettings, Decoder
from harken.inference import Model
from harken.manifest import Sample
from harken.model import choose_device
from harken.scorer import Scorer, set_defaults
from harken.storage import atomic_write
from harken.summary import ProgressBar
from harken.tuning import TuneConfig, TuneResult, search_pair

if TYPE_CHECKING:
    from harken.adaptation import Plan

Log = Callable[[str], None]
WORDS_FILE = "text.txt"  # in data/: the text as the scorer reads it (adaptation_inputs.words_of)


# --- hearing and measuring -------------------------------------------------------------------------------


def log_probs(model: Model, samples: Sequence[Sample], title: str, progress: bool) -> list[np.ndarray]:
    """The model's log-probabilities [time, n_classes] of each recording (its whole file in one pass)."""
    from harken import audio

    found = []
    zeros = np.zeros((model.backend.directions, 1, model.backend.n_hidden), np.float32)
    with ProgressBar(title, len(samples), progress) as bar:
        for sample in samples:
            samples_ = torch.from_numpy(audio.read(sample.path, model.sample_rate))
            windows = features.utterance_windows(samples_, model.dims.features).numpy()
            out, _ = model.backend(windows, (zeros, zeros.copy()))
            found.append(np.ascontiguousarray(out[0]))
            bar.advance()
    return found


@dataclass
class Heard:
    """One model's log-probs of the dev and test recordings."""

    dev: list[np.ndarray]
    test: list[np.ndarray]


def hear(model: Model, plan: Plan, name: str) -> Heard:
    everything = plan.dev + plan.test
    frames = log_probs(model, everything, f"Running the {name} model", plan.config.show_progressbar)
    return Heard(frames[: len(plan.dev)], frames[len(plan.dev) :])


def rates(decoder: Decoder, frames: list[np.ndarray], samples: Sequence[Sample]) -> Rates | None:
    if not samples:
        return None
    wer, cer = tuning.rates(decoder, frames, [sample.transcript for sample in samples])
    return Rates(wer, cer, len(samples))


def measure(plan: Plan, heard: Heard, scorer: Scorer | None, pair: tuple[float, float] | None = None) -> Any:
    """(dev rates, test rates) decoding ``heard`` as ``transcribe`` would (its default beam), with
    ``scorer`` at its own alpha and beta or at ``pair``."""
    settings = BeamSettings() if pair is None else BeamSettings(alpha=pair[0], beta=pair[1])
    decoder = Decoder(plan.alphabet, settings, scorer)
    return rates(decoder, heard.dev, plan.dev), rates(decoder, heard.test, plan.test)


class Steps:
    """The steps of one run. The base model's log-probs are computed once (when a step first needs them)
    and shared by the steps that decode them."""

    def __init__(self, plan: Plan, state: RunState, log: Log) -> None:
        self.plan, self.state, self.log = plan, state, log
        self.config = plan.config
        self.output = plan.config.output
        self.scorer_path = self.output / "lm.scorer"
        self._heard: Heard | None = None

    @property
    def heard(self) -> Heard:
        if self._heard is None:
            self._heard = hear(self.plan.model, self.plan, "base")
        return self._heard

    def _scorer(self) -> Scorer:
        return Scorer(self.scorer_path, self.plan.alphabet)

    def _search(self, heard: Heard, scorer: Scorer) -> TuneResult:
        texts = [sample.transcript for sample in self.plan.dev]
        decoding = (self.plan.alphabet, scorer, BeamSettings())
        box = TuneConfig(n_trials=self.config.n_trials)
        return search_pair(heard.dev, texts, decoding, box, self.config.show_progressbar)

    def base(self) -> tuple[Rates | None, Rates | None, dict[str, Any]]:
        dev, test = measure(self.plan, self.heard, None)
        return dev, test, {"label": f"no scorer, beam {BeamSettings().width(None)}"}

    def scorer(self) -> tuple[Rates | None, Rates | None, dict[str, Any]]:
        from harken import language_model

        plan = self.plan
        lm = language_model.LmConfig(
            text=(self.output / "data" / WORDS_FILE,), output=self.scorer_path, order=plan.order,
            prune=plan.prune,
            kenlm_bin=self.config.kenlm_bin,
        )  # fmt: skip
        spelling = None if isinstance(plan.alphabet, ByteAlphabet) else plan.alphabet
        self.output.mkdir(parents=True, exist_ok=True)
        with ProgressBar("Building the scorer", 1, self.config.show_progressbar) as bar:
            info = language_model.build(lm, spelling, log=lambda line: None)
            bar.advance()
        dev, test = measure(plan, self.heard, self._scorer()) if plan.dev or plan.test else (None, None)
        details = {
            "label": f"{plan.order}-gram",
            "vocabulary": len(info.vocabulary),
            "alpha": info.alpha,
            "beta": info.beta,
            "megabytes": round(self.scorer_path.stat().st_size / 1e6, 3),
        }
        return dev, test, details

    def tuned(self) -> tuple[Rates | None, Rates | None, dict[str, Any]]:
        found = self._search(self.heard, self._scorer())
        set_defaults(self.scorer_path, found.alpha, found.beta)
        dev, test = measure(self.plan, self.heard, self._scorer())
        return dev, test, {"alpha": found.alpha, "beta": found.beta, "trials": found.trials}

    def finetune(self) -> tuple[Rates | None, Rates | None, dict[str, Any]]:
        from harken.train import train

        train(self._train_config(), log=self.log)
        saved = newest_checkpoint(self.output / "finetune")
        model = Model(saved, device=str(choose_device(self.config.device)))
        heard = hear(model, self.plan, "fine-tuned")
        scorer = self._scorer()  # at the pair tuned for the base model
        before_dev, before_test = measure(self.plan, heard, scorer)
        found = self._search(heard, scorer)
        dev, test = measure(self.plan, heard, scorer, (found.alpha, found.beta))
        retuned = (found.alpha, found.beta) != (scorer.alpha, scorer.beta)
        details = {
            "label": "alpha/beta re-tuned" if retuned else "alpha/beta kept",
            "alpha": found.alpha,
            "beta": found.beta,
            "checkpoint": str(saved),
            "epochs": self.config.epochs,
            "with_base_alpha_beta": {"dev": _plain(before_dev), "test": _plain(before_test)},
        }
        return dev, test, details

    def _base_checkpoints(self) -> tuple[Path, str]:
        """The base as a checkpoint directory training can start from, and --load_train for it."""
        if self.config.checkpoint_dir is not None:
            directory = self.config.checkpoint_dir
            return directory, "best" if checkpoint.listing(directory, checkpoint.BEST) else "last"
        directory = self.output / "base"
        if not checkpoint.listing_any(directory):
            source = self.config.base
            if source.suffix.lower() == ".tflite":
                checkpoint.import_model(source, directory)
            else:
                directory.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, directory / f"{checkpoint.TRAIN}-0.pt")
        return directory, "last"

    def _train_config(self) -> Config:
        from harken.config import (
            PRESETS,
            CheckpointConfig,
            DataConfig,
            ModelConfig,
            RuntimeConfig,
            TrainConfig,
        )

        directory, load_train = self._base_checkpoints()
        preset, dims, c = PRESETS["small_data"], self.plan.model.dims, self.config
        data = self.output / "data"
        return Config(
            features=dims.features,
            model=dims.model_config(ModelConfig(**preset["model"])),
            data=DataConfig(
                train_files=str(data / "train.csv"), dev_files=str(data / "dev.csv"),
                train_batch_size=c.train_batch_size, dev_batch_size=c.train_batch_size,
                **alphabet_options(self.plan.alphabet, self.output), **preset["data"],
            ),
            checkpoint=CheckpointConfig(
                load_checkpoint_dir=str(directory), save_checkpoint_dir=str(self.output / "finetune"),
                load_train=load_train,
            ),
            train=TrainConfig(epochs=c.epochs, learning_rate=c.learning_rate, **preset["train"]),
            runtime=RuntimeConfig(device=c.device, show_progressbar=c.show_progressbar),
        )  # fmt: skip

    def finish(self) -> None:
        """Choose the model (fine-tuned only where it is better on dev), store its alpha and beta in the
        scorer, write the model files and report.json, print the table."""
        tuned, tuned_more = self.state.done("tuned"), self.state.done("fine-tuned")
        chosen = "base"
        if tuned_more is not None and tuned is not None and tuned.dev and tuned_more.dev:
            chosen = "fine-tuned" if tuned_more.dev.wer < tuned.dev.wer else "base"
        pair = None
        if chosen == "fine-tuned":
            pair = (tuned_more.details["alpha"], tuned_more.details["beta"])  # type: ignore[union-attr]
        elif tuned is not None:
            pair = (tuned.details["alpha"], tuned.details["beta"])
        if pair is not None:
            set_defaults(self.scorer_path, *pair)
        files = self._model_files(chosen)
        scorer = self._scorer()
        result = {
            "model": chosen,
            "alpha": scorer.alpha,
            "beta": scorer.beta,
            "files": {name: str(path) for name, path in files.items()},
            "measured_on": " and ".join(
                name for name, data in (("dev", self.plan.dev), ("test", self.plan.test)) if data
            )
            or "nothing",
        }
        if not self.plan.dev:
            result["note"] = "no dev audio to measure on: the scorer keeps its default alpha and beta"
        report = write_report(self.output, self.state, result)
        steps = [self.state.steps[name] for name in LABELS if name in self.state.steps]
        self.log("")
        self.log(table(steps))
        self.log(
            f"\nChosen: the {chosen} model, the scorer at alpha {scorer.alpha:.3f}, beta {scorer.beta:.3f}; "
            f"the report: {report}"
        )
        model = files.get("onnx", files.get("checkpoint"))
        self.log(f"Use it: harken transcribe --model {model} --scorer {self.scorer_path} AUDIO")

    def _model_files(self, chosen: str) -> dict[str, Path]:
        """model.pt (and model.onnx) of the chosen model in the output folder (once per choice)."""
        out = self.output
        made = self.state.facts.get("model_files")
        if made is not None and made.get("chosen") == chosen:
            kept = {name: Path(path) for name, path in made["files"].items()}
            if all(path.is_file() for path in kept.values()):
                return kept
        files: dict[str, Path] = {}
        base = self.config.base
        if chosen == "base" and base.suffix.lower() == ".onnx":
            shutil.copy(base, out / "model.onnx")
            files["onnx"] = out / "model.onnx"
        else:
            source = newest_checkpoint(out / "finetune") if chosen == "fine-tuned" else self._base_file()
            copy_model(source, out / "model.pt")
            files["checkpoint"] = out / "model.pt"
            if self.config.export_onnx:
                exported = self._export(out / "model.pt")
                if exported is not None:
                    files["onnx"] = exported
        self.state.facts["model_files"] = {"chosen": chosen, "files": {k: str(v) for k, v in files.items()}}
        self.state.save()
        return files

    def _base_file(self) -> Path:
        """The base model's checkpoint file to copy, checked to be the one this run started from."""
        flag = "model" if self.config.model is not None else "checkpoint_dir"
        now = inputs.base_digest(self.config.checkpoint_dir, self.config.model)
        if now != self.state.inputs.get(f"{flag}_digest"):
            raise AdaptError(
                f"--{flag} {self.config.base}: the base model changed during the run; run the command "
                "again with a new --output"
            )
        if self.config.checkpoint_dir is not None:
            return inputs.base_file(self.config.checkpoint_dir, None)
        return newest_checkpoint(self._base_checkpoints()[0])

    def _export(self, model: Path) -> Path | None:
        from harken.config import ExportConfig
        from harken.export import ExportError, export

        with ProgressBar("Exporting model.onnx", 1, self.config.show_progressbar) as bar:
            try:
                (result,) = export(checkpoint.load_file(model), ExportConfig(export_dir=str(self.output)))
            except (ExportError, ImportError) as error:
                self.log(f"note: no model.onnx ({error}); model.pt serves as it is")
                return None
            bar.advance()
        return result.path


def _plain(rates: Rates | None) -> dict[str, Any] | None:
    return None if rates is None else asdict(rates)


def alphabet_options(alphabet: Alphabet, folder: Path) -> dict[str, Any]:
    """The training options that give a model ``alphabet`` (written to ``folder`` when not the default)."""
    if isinstance(alphabet, ByteAlphabet):
        return {"bytes_output_mode": True}
    if alphabet == Alphabet.default():
        return {}
    path = folder / "alphabet.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(alphabet.to_file_text(), encoding="utf-8")
    return {"alphabet_config_path": str(path)}


def copy_model(source: Path, target: Path) -> None:
    """A checkpoint file as ``target``, without the optimizer state inference does not need."""
    payload = {**checkpoint.read(source), "optimizer": None}
    with atomic_write(target, "wb") as handle:
        torch.save(payload, handle)


def newest_checkpoint(directory: Path) -> Path:
    """The checkpoint ``transcribe`` loads from ``directory``: the best on dev, else the last (one that
    cannot be read is skipped, as the loader does)."""
    found = checkpoint.newest(directory, checkpoint.kinds_for("auto", training=False))
    if found is None:
        raise AdaptError(f"{directory}: no checkpoint found")
    return found[0]
