"""Every option harken has, declared once.

Each field of these frozen dataclasses is one command-line flag (cli.py generates argparse from them) with
DeepSpeech 0.9's name and default where DeepSpeech had the option. The resolved configuration is stored in
every checkpoint: the model's front end and geometry as its dims (dims.py), the rest as the run's settings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


def option(
    default: Any,
    help: str,
    group: str | None = None,
    choices: tuple[Any, ...] | None = None,
    aliases: tuple[str, ...] = (),
    *,
    positional: bool = False,
    required: bool = False,
    parse: Callable[[str], Any] | None = None,
    shortcuts: tuple[tuple[str, Any], ...] = (),
    metavar: str | None = None,
    flag: str | None = None,
) -> Any:
    """A dataclass field that is a command-line option: its help text and, optionally, its help group, the
    values it takes, other flag names it answers to, whether it is a positional argument or a required
    flag, how a value is read from its text (default: from the field's type), flags that set it to a
    fixed value (``(("json", "json"),)``: ``--json`` sets it to "json"), the name its value goes by
    in the help, and the flag's name where it cannot be the field's (``from``, a Python keyword).
    ``arguments`` makes the flags; a field declared without ``option`` is no flag."""
    metadata = {
        "help": help,
        "group": group,
        "choices": choices,
        "aliases": aliases,
        "positional": positional,
        "required": required,
        "parse": parse,
        "shortcuts": shortcuts,
        "metavar": metavar,
        "flag": flag,
    }
    return field(default=default, metadata=metadata)


def comma_list(text: str) -> tuple[str, ...]:
    """A comma-separated option value as its parts, blanks dropped ("a, b,,c" -> ("a", "b", "c"))."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def require(ok: bool, flag: str, value: Any, expected: str) -> None:
    """Raise the one-line error for an option value out of range."""
    if not ok:
        raise ValueError(f"--{flag} {value}: must be {expected}")


def _require_all(config: Any, checks: dict[str, tuple[Any, str]]) -> None:
    """checks: field name -> (predicate on its value, what it must be)."""
    for name, (predicate, expected) in checks.items():
        value = getattr(config, name)
        require(predicate(value), name, value, expected)


def _positive(value: float) -> bool:
    return 0 < value < math.inf  # nan and inf are neither


def _non_negative(value: float) -> bool:
    return 0 <= value < math.inf


def _rate(value: float) -> bool:
    return value == -1.0 or 0.0 <= value < 1.0


def data_folder(xdg_data_home: str = "") -> Path:
    """harken's folder for what it keeps between runs: <XDG_DATA_HOME>/harken, ~/.local/share/harken when
    none is given (``harken`` passes $XDG_DATA_HOME)."""
    return Path(xdg_data_home or Path("~/.local/share").expanduser()) / "harken"


FEATURE_NORMS = ("auto", "mean", "none")


@dataclass(frozen=True)
class FeatureConfig:
    """The acoustic front end: DeepSpeech 0.9's MFCC, exactly (docs/design.md)."""

    audio_sample_rate: int = option(16000, "sample rate the model works at; input audio is resampled to it")
    feature_win_len: int = option(32, "feature extraction window length in milliseconds")
    feature_win_step: int = option(20, "feature extraction window step in milliseconds")
    n_mfcc: int = option(26, "number of MFCC coefficients per frame")
    n_mel_channels: int = option(40, "number of mel filterbank channels")
    n_context: int = option(9, "frames of context on each side of the current frame")
    feature_norm: str = option(
        "auto",
        "normalise the MFCC frames: mean (subtract each coefficient's running mean over the frames so far, "
        "so that recording level and microphone do not matter; streams stay exact), none (DeepSpeech's front "
        "end, as imported models have), auto (mean for a new model, the checkpoint's own when training one "
        "further)",
        choices=FEATURE_NORMS,
    )
    feature_norm_window: int = option(
        300, "frames the running mean of --feature_norm mean covers at most (300: the last 6 s)"
    )
    feature_norm_silence: float = option(
        30.0,
        "dB under the running mean at which --feature_norm mean puts a frame of digital silence (30: the "
        "quietest frames the mean counts; stored in the checkpoint)",
    )

    # What a stored configuration (checkpoint, export) written before an option existed meant by it: before
    # feature_norm, DeepSpeech's front end; before feature_norm_silence, silent frames at c0 -100 (97.1 dB
    # with 40 mel channels).
    STORED_BEFORE: ClassVar[dict[str, Any]] = {
        "feature_norm": "none",
        "feature_norm_silence": 97.11119837887232,
    }

    def __post_init__(self) -> None:
        _require_all(self, {
            "feature_norm": (lambda v: v in FEATURE_NORMS, " or ".join(FEATURE_NORMS)),
            "feature_norm_window": (lambda w: 0 < w <= 30000, "1 to 30000 frames (a stream keeps them)"),
            "feature_norm_silence": (lambda d: 0 < d <= 200, "more than 0 and at most 200 dB"),
            "audio_sample_rate": (lambda r: 1000 <= r <= 384000, "1000 to 384000 Hz"),
            "feature_win_len": (_positive, "a positive number of milliseconds"),
            "feature_win_step": (_positive, "a positive number of milliseconds"),
            "n_mel_channels": (_positive, "positive"),
            "n_mfcc": (lambda n: 0 < n <= self.n_mel_channels, f"1 to n_mel_channels, {self.n_mel_channels}"),
            "n_context": (_non_negative, "0 or more"),
        })  # fmt: skip
        require(
            self.window_samples >= 2, "feature_win_len", self.feature_win_len, "at least two samples long"
        )
        require(self.step_samples >= 1, "feature_win_step", self.feature_win_step, "at least one sample long")

    @property
    def window_samples(self) -> int:
        return self.audio_sample_rate * self.feature_win_len // 1000

    @property
    def step_samples(self) -> int:
        return self.audio_sample_rate * self.feature_win_step // 1000

    @property
    def n_input(self) -> int:
        """Width of one context window: (2 * n_context + 1) frames of n_mfcc coefficients."""
        return (2 * self.n_context + 1) * self.n_mfcc


@dataclass(frozen=True)
class ModelConfig:
    """Acoustic model geometry and regularisation."""

    n_hidden: int = option(2048, "layer width of the dense layers and LSTM cells")
    relu_clip: float = option(20.0, "ReLU activations are clipped at this value")
    bidirectional: bool = option(
        False, "use a bidirectional LSTM (the early DeepSpeech BiRNN; not streamable)"
    )
    dropout_rate: float = option(0.05, "dropout rate for layer 1 (and the default of the others)")
    dropout_rate2: float = option(-1.0, "dropout rate for layer 2 (-1: use dropout_rate)")
    dropout_rate3: float = option(-1.0, "dropout rate for layer 3 (-1: use dropout_rate)")
    dropout_rate4: float = option(0.0, "dropout rate for the (forward) LSTM output (-1: use dropout_rate)")
    dropout_rate5: float = option(0.0, "dropout rate for the backward LSTM output (-1: use dropout_rate)")
    dropout_rate6: float = option(
        -1.0, "dropout rate for layer 5, as DeepSpeech numbered it (-1: use dropout_rate)"
    )

    def __post_init__(self) -> None:
        _require_all(self, {
            "n_hidden": (_positive, "positive"),
            "relu_clip": (_positive, "positive"),
            **{f"dropout_rate{n}": (_rate, "-1 or in [0, 1)") for n in ("", 2, 3, 4, 5, 6)},
        })  # fmt: skip
        require(self.dropout_rate >= 0, "dropout_rate", self.dropout_rate, "in [0, 1)")

    def dropout(self, layer: int) -> float:
        """The value of dropout_rate<layer> (layer 1: dropout_rate); -1 falls back to dropout_rate."""
        rates = {
            1: self.dropout_rate,
            2: self.dropout_rate2,
            3: self.dropout_rate3,
            4: self.dropout_rate4,
            5: self.dropout_rate5,
            6: self.dropout_rate6,
        }
        rate = rates[layer]
        return self.dropout_rate if rate < 0 else rate


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is read."""

    train_files: str = option("", "comma-separated list of CSV files with the training samples")
    dev_files: str = option("", "comma-separated list of CSV files with the validation samples")
    test_files: str = option("", "comma-separated list of CSV files with the test samples")
    alphabet_config_path: str = option(
        "", "alphabet file (DeepSpeech format); empty: harken's English alphabet"
    )
    bytes_output_mode: bool = option(
        False, "the model spells the UTF-8 bytes of the transcripts (any script) instead of an alphabet"
    )
    train_batch_size: int = option(
        1, "number of samples in a training batch (global: torchrun's processes each take a share)"
    )
    dev_batch_size: int = option(1, "number of samples in a validation batch (global, as train_batch_size)")
    test_batch_size: int = option(1, "number of samples in a test batch (global, as train_batch_size)")
    limit_train: int = option(0, "use at most this many training samples (0: all)")
    limit_dev: int = option(0, "use at most this many validation samples (0: all)")
    limit_test: int = option(0, "use at most this many test samples (0: all)")
    reverse_train: bool = option(False, "train longest samples first instead of shortest")
    reverse_dev: bool = option(False, "validate longest samples first")
    reverse_test: bool = option(False, "test longest samples first")
    shuffle_batches: bool = option(False, "shuffle the order of the duration-sorted batches every epoch")
    num_workers: int = option(-1, "data loader worker processes (-1: one per spare CPU core, at most 4)")
    augment: tuple[str, ...] = option(
        (),
        "augment the training samples, DeepSpeech's syntax, repeatable: --augment "
        "'overlay[p=0.5,source=noise.csv,snr=18:12~6]' --augment 'frequency_mask[p=0.2,n=1:3,size=1:5]'",
    )
    augment_preview: str = option("", "write a few augmented training samples as wav files into this folder")
    empty_transcripts: str = option(
        "skip",
        "skip: leave out samples whose transcript is empty (DeepSpeech's); train: keep them as non-speech "
        "(silence, noise), on which the model learns to say nothing",
        choices=("skip", "train"),
    )
    feature_cache: str = option(
        "", "keep computed features in this folder, so later epochs skip reading audio (not augmented ones)"
    )
    device_features: bool = option(
        False,
        "compute the MFCCs in the training step on its device (the GPU) instead of in the loader workers, "
        "which then only read (and augment) audio: for when the loader cannot keep up",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", tuple(self.augment))
        _require_all(self, {
            **{f"{split}_batch_size": (_positive, "positive") for split in ("train", "dev", "test")},
            **{f"limit_{split}": (_non_negative, "0 (all) or more") for split in ("train", "dev", "test")},
            "num_workers": (lambda n: -1 <= n <= MAX_WORKERS, f"-1 (automatic) to {MAX_WORKERS}"),
        })  # fmt: skip
        if self.device_features and self.feature_cache:
            raise ValueError(
                "--device_features computes features in the training step, so --feature_cache would hold "
                "nothing: use one or the other"
            )


@dataclass(frozen=True)
class CheckpointConfig:
    checkpoint_dir: str = option(
        "",
        "directory to load checkpoints from and save them to (default: $XDG_DATA_HOME/harken/checkpoints, "
        "else ~/.local/share/harken/checkpoints)",
    )
    load_checkpoint_dir: str = option("", "load from here instead of checkpoint_dir")
    save_checkpoint_dir: str = option("", "save to here instead of checkpoint_dir")
    load_train: str = option(
        "auto",
        "what to start training from: auto (last, else best, else init), last, best or init",
        choices=("auto", "last", "best", "init"),
    )
    load_evaluate: str = option(
        "auto",
        "which checkpoint evaluate/transcribe use: auto (best, else last), best or last",
        choices=("auto", "best", "last"),
    )
    checkpoint_secs: int = option(600, "save a checkpoint at least this often during an epoch (seconds)")
    max_to_keep: int = option(5, "number of latest training checkpoints to keep")
    # Where checkpoints go when no --checkpoint_dir is given (harken sets it from $XDG_DATA_HOME).
    default_dir: str = str(data_folder() / "checkpoints")
    drop_source_layers: int = option(
        0,
        "fine-tuning: re-initialise this many of the source model's last layers (1: the output layer, "
        "needed for a new alphabet; up to 6)",
    )

    def __post_init__(self) -> None:
        _require_all(self, {
            "checkpoint_secs": (_non_negative, "0 or more seconds"),
            "max_to_keep": (_positive, "1 or more"),
            "drop_source_layers": (lambda v: 0 <= v <= 6, "0 to 6 (the model has six layers)"),
        })  # fmt: skip


# --preset NAME: the option values a preset stands for (options given on the command line win; a given
# --augment replaces the preset's whole set). docs/training.md says how they were chosen.
MAX_WORKERS = 128  # data loader processes: each holds a copy of the dataset's state (hundreds of MB)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "small_data": {
        "model": {"dropout_rate": 0.1},
        "data": {
            "shuffle_batches": True,
            "empty_transcripts": "train",
            "augment": (
                "frequency_mask[p=0.5,n=1:3,size=1:5]",
                "time_mask[p=0.5,n=1:3,size=2:6]",
                "tempo[p=0.3,factor=1~0.1]",
                "reverb[p=0.2,delay=20~10,decay=8:4~2]",
                "add[p=0.3,domain=features,stddev=0~0.2]",
                "resample[p=0.4,rate=8000]",
            ),
        },
        "train": {"learning_rate_schedule": "cosine", "warmup_epochs": 1.0},
    },
}


def apply_preset(given: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """section -> {option: value} given, with the values of the preset it names (train.preset) added
    where the option was not given."""
    name = given.get("train", {}).get("preset", "")
    merged = {section: dict(values) for section, values in given.items()}
    for section, values in PRESETS.get(name, {}).items():
        for option_name, value in values.items():
            merged.setdefault(section, {}).setdefault(option_name, value)
    return merged


@dataclass(frozen=True)
class TrainConfig:
    """The training run: optimiser, schedule, stopping, summaries."""

    epochs: int = option(75, "how many epochs (complete passes over the training data) to train")
    learning_rate: float = option(0.001, "learning rate of the Adam optimiser")
    beta1: float = option(0.9, "beta1 of the Adam optimiser")
    beta2: float = option(0.999, "beta2 of the Adam optimiser")
    epsilon: float = option(1e-8, "epsilon of the Adam optimiser")
    clip_grad_norm: float = option(0.0, "clip the global gradient norm to this value (0: no clipping)")
    random_seed: int = option(4568, "seed for weight initialisation, dropout and batch order")
    early_stop: bool = option(False, "stop when the validation loss stops improving")
    es_epochs: int = option(25, "epochs without improvement of the validation loss before stopping")
    es_min_delta: float = option(0.05, "smallest validation loss decrease that counts as an improvement")
    reduce_lr_on_plateau: bool = option(False, "reduce the learning rate when the validation loss plateaus")
    plateau_epochs: int = option(10, "epochs without improvement before the learning rate is reduced")
    plateau_reduction: float = option(0.1, "factor the learning rate is multiplied by on a plateau")
    learning_rate_schedule: str = option(
        "constant",
        "constant: --learning_rate throughout (DeepSpeech's; lowered only by --reduce_lr_on_plateau); "
        "cosine: up from near 0 over --warmup_epochs, then down to --min_learning_rate along a half cosine "
        "by the last epoch (steadier dev loss, see docs/training.md)",
        choices=("constant", "cosine"),
    )
    warmup_epochs: float = option(1.0, "epochs of linear warm-up of --learning_rate_schedule cosine")
    min_learning_rate: float = option(
        1e-5, "the learning rate --learning_rate_schedule cosine ends at (in the last epoch)"
    )
    summary_dir: str = option("", "TensorBoard summaries go here (empty: <save_checkpoint_dir>/summaries)")
    automatic_mixed_precision: bool = option(
        False,
        "train in bfloat16 where the GPU or CPU has it (float16 with a gradient scaler on older GPUs, "
        "float32 on other CPUs); CTC loss in float32",
    )
    gradient_accumulation: int = option(
        1, "add the gradients of this many batches before each update (effective batch: N x train_batch_size)"
    )
    auto_batch_size: bool = option(
        False, "on a GPU out-of-memory error, train each batch in halves and go on (one process only)"
    )
    preset: str = option(
        "",
        "small_data: harken's recipe for an hour or less of speech (SpecAugment-style masks, tempo, "
        "reverb, 8 kHz band limits and feature noise, dropout 0.1, --learning_rate_schedule cosine, "
        "--empty_transcripts train); options given as well win",
        choices=("", *PRESETS),
    )

    def __post_init__(self) -> None:
        _require_all(self, {
            "epochs": (lambda e: 0 <= e <= 1_000_000, "0 to 1000000"),
            "random_seed": (lambda s: 0 <= s < 2**63, "0 to 2^63 - 1"),
            "gradient_accumulation": (_positive, "1 or more"),
            "learning_rate": (_positive, "positive"),
            "beta1": (lambda b: 0 <= b < 1, "in [0, 1)"),
            "beta2": (lambda b: 0 <= b < 1, "in [0, 1)"),
            "epsilon": (_positive, "positive"),
            "clip_grad_norm": (_non_negative, "0 (off) or more"),
            "es_epochs": (_positive, "1 or more"),
            "es_min_delta": (_non_negative, "0 or more"),
            "plateau_epochs": (_positive, "1 or more"),
            "plateau_reduction": (lambda r: 0 < r <= 1, "in (0, 1]"),
            "warmup_epochs": (_non_negative, "0 or more"),
            "min_learning_rate": (lambda m: 0 <= m <= self.learning_rate, "0 to --learning_rate"),
        })  # fmt: skip
        if self.learning_rate_schedule == "cosine" and self.reduce_lr_on_plateau:
            raise ValueError("--reduce_lr_on_plateau works with --learning_rate_schedule constant only")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a command runs, apart from what it computes: the device, progress bars, and the
    test reports (train, evaluate, transcribe, serve and lm tune share it)."""

    device: str = option("auto", "torch device: auto (cuda when available), cpu, cuda, cuda:1 ...")
    show_progressbar: bool = option(True, "show progress bars with an ETA")
    report_count: int = option(5, "samples of each of the best, median and worst to show in test reports")
    test_output_file: str = option(
        "", "write every test sample's result to this JSON file (default: <checkpoint dir>/test-results.json)"
    )

    def __post_init__(self) -> None:
        _require_all(self, {"report_count": (_non_negative, "0 or more")})


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export: where, how, and the metadata DeepSpeech's export_* flags carried."""

    export_dir: str = option("", "directory to write model.onnx (and model.int8.onnx) into")
    check_audio: str = option("", "speech to check the export on (default: espeak-ng)")
    quantize: str = option(
        "none",
        "also write an int8 model (int8 weights, activations quantized per frame)",
        choices=("none", "int8"),
    )
    export_author_id: str = option("author", "author of the model (a short id)")
    export_model_name: str = option("model", "name of the model")
    export_model_version: str = option("0.0.1", "version of the model")
    export_contact_info: str = option("<author email>", "how to reach the author")
    export_license: str = option("AGPL-3.0", "license of the model (SPDX identifier)")
    export_language: str = option("", "language the model was trained on (BCP 47 tag, e.g. en-US)")
    export_description: str = option("", "free text describing the model")


@dataclass(frozen=True)
class DecoderConfig:
    """How log-probabilities become text: DeepSpeech's decoder flags."""

    scorer_path: str = option(
        "",
        "external scorer (.scorer: KenLM + vocabulary) for the beam search; empty: none",
        aliases=("scorer",),
    )
    beam_width: int = option(
        0,
        "beam width of the CTC beam search (0: 500 with a scorer, as DeepSpeech; 16 without one, the same "
        "WER as 500 there at 1/20 of the cost, docs/benchmarks.md; 1 without a scorer: greedy)",
    )
    lm_alpha: float | None = option(None, "language model weight (default: the scorer's own)")
    lm_beta: float | None = option(None, "word insertion bonus (default: the scorer's own)")
    cutoff_prob: float = option(1.0, "per frame, keep the likeliest labels until this much probability")
    cutoff_top_n: int = option(300, "per frame, keep at most this many labels")
    hot_words: str = option(
        "", 'words or phrases to boost or suppress: "word:boost,fiona walker:boost" (a scorer or none)'
    )

    def __post_init__(self) -> None:
        check_search(self.beam_width, self.cutoff_prob, self.cutoff_top_n)
        for name in ("lm_alpha", "lm_beta"):
            value = getattr(self, name)
            require(value is None or math.isfinite(value), name, value, "a finite number")


MAX_BEAM_WIDTH = 10000  # flashlight keeps every beam's hypotheses: memory and time grow with it
# --beam_width 0: the width with a scorer (DeepSpeech's) and without one (bench/beam_default.py: on the demo
# model 16 loses nothing against 500 without a scorer, on its test set and on held-out voices and sentences)
BEAM_WITH_SCORER, BEAM_WITHOUT_SCORER = 500, 16


def check_search(beam_width: int, cutoff_prob: float, cutoff_top_n: int) -> None:
    """The ranges of a beam search's settings (the flags' and ``decoder.BeamSettings``'s, which the
    Model API changes)."""
    require(0 <= beam_width <= MAX_BEAM_WIDTH, "beam_width", beam_width, f"0 (automatic) to {MAX_BEAM_WIDTH}")
    require(0.0 < cutoff_prob <= 1.0, "cutoff_prob", cutoff_prob, "in (0, 1]")
    require(cutoff_top_n >= 1, "cutoff_top_n", cutoff_top_n, "at least 1")


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a training run."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def load_dir(self) -> Path:
        ckpt = self.checkpoint
        return Path(ckpt.load_checkpoint_dir or ckpt.checkpoint_dir or ckpt.default_dir)

    @property
    def save_dir(self) -> Path:
        ckpt = self.checkpoint
        return Path(ckpt.save_checkpoint_dir or ckpt.checkpoint_dir or ckpt.default_dir)

    @property
    def summary_dir(self) -> Path:
        """Where TensorBoard summaries go: --summary_dir, else the save directory's summaries/."""
        return Path(self.train.summary_dir) if self.train.summary_dir else self.save_dir / "summaries"


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain nested dicts (stored in checkpoints)."""
    return dataclasses.asdict(config)


def from_dict(cls: type[Any], values: dict[str, Any], stored: bool = False) -> Any:
    """Rebuild a config dataclass from to_dict's output, ignoring keys this version does not know.

    ``stored``: the values come from a checkpoint or an export, where a missing option means what the
    version that wrote it did (a class's ``STORED_BEFORE``), not today's default."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            if stored and f.name in getattr(cls, "STORED_BEFORE", {}):
                kwargs[f.name] = cls.STORED_BEFORE[f.name]
            continue
        value = values[f.name]
        sub = _dataclass_type(cls, f.name)
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value, stored)
        kwargs[f.name] = value
    return cls(**kwargs)


def _dataclass_type(cls: type[Any], name: str) -> type[Any] | None:
    sections: dict[str, type[Any]] = {
        "features": FeatureConfig,
        "model": ModelConfig,
        "data": DataConfig,
        "checkpoint": CheckpointConfig,
        "train": TrainConfig,
        "decoder": DecoderConfig,
        "runtime": RuntimeConfig,
    }
    return sections.get(name) if cls is Config else None
