"""The command line's arguments: every command's parser, its options generated from the config dataclasses
(one declaration each, DeepSpeech's names), and the config a parsed command line stands for. Boolean
options take DeepSpeech's forms: ``--early_stop``, ``--early_stop true``, ``--early_stop=false``,
``--noearly_stop``. ``cli`` runs what these parse.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from harken import __version__
from harken import config as config_module
from harken.config import (
    CheckpointConfig,
    Config,
    DataConfig,
    DecoderConfig,
    ExportConfig,
    FeatureConfig,
    ModelConfig,
    RuntimeConfig,
    TrainConfig,
    option,
    require,
)
from harken.formats import OUTPUT_FORMATS


@dataclass(frozen=True)
class ModelSource:
    """The model ``transcribe`` and ``serve`` load when it is not a checkpoint directory."""

    model: Path | None = option(
        None, "a model file instead of --checkpoint_dir: .onnx or .pt (harken), .tflite (DeepSpeech/Coqui)"
    )


@dataclass(frozen=True)
class TranscribeOptions:
    """``harken transcribe``: what to transcribe and how to write it."""

    audio: tuple[str, ...] = option((), "audio files, folders or glob patterns", positional=True)
    output_format: str = option(
        "txt",
        "txt, json (segments, word timings, confidence), srt, vtt or tsv",
        choices=OUTPUT_FORMATS,
        shortcuts=(("json", "json"),),  # DeepSpeech's client flag
    )
    candidate_transcripts: int = option(
        1, "keep this many candidates per segment (the json output lists the others as alternatives)"
    )
    batch_segments: int = option(
        4,
        "run a recording of 8 s or more as up to this many stretches side by side through the LSTM "
        "(faster for large models); 1 runs it in one pass, exactly as a stream does",
    )
    extended: bool = option(
        False, "accepted for DeepSpeech's client: it printed the same transcript through the metadata"
    )
    output_dir: Path | None = option(
        None, "write <name>.<format> per file here (with a progress bar) instead of printing"
    )
    vad_aggressiveness: int = option(
        3,
        "how hard the voice-activity detector splits at pauses (0-3; -1: no splitting)",
        choices=(-1, 0, 1, 2, 3),
    )

    def __post_init__(self) -> None:
        require(
            self.candidate_transcripts >= 1, "candidate_transcripts", self.candidate_transcripts, "at least 1"
        )
        require(1 <= self.batch_segments <= 64, "batch_segments", self.batch_segments, "1 to 64")


@dataclass(frozen=True)
class ImportModelOptions:
    """``harken import-model``: a DeepSpeech / Coqui model in, a harken checkpoint out."""

    model: Path = option(
        Path(),
        "a .tflite file, or a TensorFlow checkpoint: its directory or prefix (release/best_dev-1466475)",
        positional=True,
    )
    output: Path = option(Path(), "an empty checkpoint directory", required=True)
    alphabet_config_path: Path | None = option(
        None, "a TensorFlow checkpoint's alphabet (default: alphabet.txt beside it, else English)"
    )


@dataclass(frozen=True)
class ShardOptions:
    """``harken shard``: a corpus packed into tar shards that train like its CSV."""

    csv: str = option("", "CSV manifests, comma-joined", required=True, flag="from")
    output: Path = option(Path(), "folder for shard-*.tar and the new CSV", required=True)
    shard_size: int = option(1000, "recordings per tar")

    def __post_init__(self) -> None:
        require(self.shard_size >= 1, "shard_size", self.shard_size, "1 or more")


@dataclass(frozen=True)
class AlphabetOptions:
    """``harken alphabet``: the alphabet that spells a corpus's transcripts."""

    csv: str = option("", "CSV manifests, comma-joined", required=True, flag="from")
    output: Path | None = option(None, "write the alphabet file here (default: print it)")


SECTIONS: dict[str, tuple[type[Any], str]] = {
    "features": (FeatureConfig, "features (stored in the checkpoint)"),
    "model": (ModelConfig, "model geometry and dropout"),
    "data": (DataConfig, "data"),
    "checkpoint": (CheckpointConfig, "checkpoints"),
    "train": (TrainConfig, "training and schedule"),
    "export": (ExportConfig, "export"),
    "decoder": (DecoderConfig, "decoder (beam search and scorer)"),
    "runtime": (RuntimeConfig, "device, progress and reports"),
}

# Which options each command has: section -> field names (None: all of the section).
COMMAND_OPTIONS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "train": {name: None for name in SECTIONS},
    "evaluate": {
        "data": ("test_files", "test_batch_size", "limit_test", "reverse_test", "num_workers"),
        "checkpoint": ("checkpoint_dir", "load_checkpoint_dir", "load_evaluate"),
        "runtime": None,
        "decoder": None,
    },
    "export": {
        "checkpoint": ("checkpoint_dir", "load_checkpoint_dir", "load_evaluate"),
        "export": None,
    },
    "transcribe": {
        "checkpoint": ("checkpoint_dir", "load_checkpoint_dir", "load_evaluate"),
        "runtime": ("device",),
        "decoder": None,
    },
    "serve": {
        "checkpoint": ("checkpoint_dir", "load_checkpoint_dir", "load_evaluate"),
        "runtime": ("device",),
        "decoder": None,
    },
    "lm-tune": {
        "data": ("dev_files", "dev_batch_size", "limit_dev", "num_workers"),
        "checkpoint": ("checkpoint_dir", "load_checkpoint_dir", "load_evaluate"),
        "runtime": ("show_progressbar", "device"),
        "decoder": ("scorer_path", "beam_width", "cutoff_prob", "cutoff_top_n"),
    },
}


class Parser(argparse.ArgumentParser):
    """argparse's parser, its errors on one line: what is wrong and where to read more (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str, "Path": Path}


def _shown(default: Any, parsed: bool) -> str:
    """A default as the help shows it (a parsed list as it is written; ``%`` escaped for argparse)."""
    if parsed and isinstance(default, tuple):
        text = repr(",".join(map(str, default)))
    else:
        text = repr(str(default)) if isinstance(default, Path) else repr(default)
    return text.replace("%", "%%")


def _reader(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An option's own parser, its ValueError shown as argparse's error message."""

    def read(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return read


def _add_field(
    group: argparse._ActionsContainer, section: str, f: dataclasses.Field[Any], switch: bool = False,
    help_text: str | None = None,
) -> None:  # fmt: skip
    """One option's argument(s): ``--name`` (and its aliases), or a positional argument. A bool is
    ``--name [BOOL]`` and ``--noname``; ``switch``: ``--name`` and ``--noname`` without a value (for
    commands with positional arguments, which a value would swallow)."""
    meta = f.metadata
    dest = f"{section}.{f.name}"
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    parse = meta.get("parse")
    value_type = _reader(parse) if parse else _TYPES.get(kind.removesuffix(" | None"), str)
    text = meta.get("help", "") if help_text is None else help_text
    if meta.get("positional"):
        nargs = "+" if kind.startswith("tuple[") and parse is None else None
        group.add_argument(
            dest, metavar=meta.get("metavar") or f.name, type=value_type, nargs=nargs, help=text
        )
        return
    if not meta.get("required") and "(default" not in text:
        text = f"{text} (default: {_shown(f.default, parse is not None)})"
    flags = [f"--{meta.get('flag') or f.name}", *(f"--{alias}" for alias in meta.get("aliases", ()))]
    for shortcut, value in meta.get("shortcuts", ()):
        group.add_argument(
            f"--{shortcut}",
            dest=dest,
            action="store_const",
            const=value,
            help=f"the same as {flags[0]} {value}",
        )
    if kind == "bool":
        if switch:
            group.add_argument(*flags, dest=dest, action="store_const", const=True, help=text)
        else:
            group.add_argument(
                *flags, dest=dest, type=parse_bool, nargs="?", const=True, metavar="BOOL", help=text
            )
        group.add_argument(f"--no{flags[0][2:]}", dest=dest, action="store_false", help=argparse.SUPPRESS)
        return
    if kind == "tuple[str, ...]" and parse is None:
        group.add_argument(*flags, dest=dest, action="append", metavar="SPEC", help=text)
        return
    group.add_argument(
        *flags,
        dest=dest,
        type=value_type,
        metavar=meta.get("metavar") or kind.split(" ")[0].split("[")[0].upper(),
        choices=meta.get("choices"),
        required=meta.get("required", False),
        help=text,
    )


def add_options(
    parser: argparse._ActionsContainer,
    section: str,
    cls: type[Any],
    names: tuple[str, ...] | None = None,
    switch: bool = False,
    helps: dict[str, str] | None = None,
) -> None:
    """The arguments of ``cls``'s option fields (those of ``names``; None: all), their values kept under
    ``section`` (``section_options`` builds ``cls`` back from them)."""
    group = parser.add_argument_group(SECTIONS[section][1]) if section in SECTIONS else parser
    for f in dataclasses.fields(cls):
        if "help" in f.metadata and (names is None or f.name in names):
            _add_field(group, section, f, switch, (helps or {}).get(f.name))


def section_options(args: argparse.Namespace, section: str, cls: type[Any]) -> Any:
    """``cls`` with the values given for ``section``'s options (the others: its defaults)."""
    given = given_options(args).get(section, {})
    return cls(**{name: tuple(v) if isinstance(v, list) else v for name, v in given.items()})


def add_config_options(parser: argparse.ArgumentParser, command: str) -> None:
    for section, names in COMMAND_OPTIONS[command].items():
        add_options(parser, section, SECTIONS[section][0], names)


def given_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """section -> {option: value} for every option given on the command line."""
    given: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, name = dest.split(".", 1)
            given.setdefault(section, {})[name] = value  # "server": serve's options, not in Config
    return given


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config the options describe: defaults, overridden by what was given."""
    return config_module.from_dict(Config, config_module.apply_preset(given_options(args)))


def _add_lm_commands(commands: Any) -> None:
    from harken.language_model import LmConfig
    from harken.tuning import TuneConfig

    lm = commands.add_parser("lm", help="build a scorer (KenLM language model) from text, or tune it")
    kinds = lm.add_subparsers(dest="lm_command", metavar="ACTION", required=True)
    build = kinds.add_parser(
        "build", help="text corpus -> .scorer (generate_lm.py + generate_scorer_package)"
    )
    add_options(build, "lm", LmConfig)
    tune = kinds.add_parser("tune", help="find alpha and beta on a dev set and store them in the scorer")
    add_options(tune, "tune", TuneConfig)
    add_config_options(tune, "lm-tune")
    kinds.add_parser("setup", help="compile KenLM's lmplz and build_binary (needed by `lm build`) once")


def _add_adapt_command(commands: Any) -> None:
    from harken.adaptation import AdaptConfig

    adapt = commands.add_parser(
        "adapt",
        help="adapt a model to a domain: its text (and a few recordings) in; a folder with the model, a "
        "tuned scorer and a report of dev WER at each step out (re-run the same command to resume)",
    )
    add_options(adapt, "adapt", AdaptConfig)


def _add_serve_command(commands: Any) -> None:
    from harken.server import ServerConfig

    serve = commands.add_parser(
        "serve", help="a speech service: HTTP, WebSocket streaming and a browser page (see /v1/models)"
    )
    add_options(serve, "source", ModelSource)
    add_options(serve.add_argument_group("service and limits"), "server", ServerConfig)
    add_config_options(serve, "serve")


def _add_transcribe_command(commands: Any) -> None:
    transcribe = commands.add_parser("transcribe", help="transcribe audio files, folders or globs")
    add_options(transcribe, "transcribe", TranscribeOptions, switch=True)
    add_options(transcribe, "source", ModelSource)
    add_config_options(transcribe, "transcribe")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="harken",
        description="Train and run DeepSpeech speech-to-text models.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"harken {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = commands.add_parser(
        "train", help="train or fine-tune a model (re-run the same command to resume)"
    )
    add_config_options(train, "train")
    evaluate = commands.add_parser("evaluate", help="WER / CER of a checkpoint on test CSVs")
    add_config_options(evaluate, "evaluate")
    _add_transcribe_command(commands)
    exporter = commands.add_parser(
        "export", help="write the model as ONNX (float, and int8 with --quantize int8)"
    )
    add_config_options(exporter, "export")
    import_model = commands.add_parser(
        "import-model",
        help="turn a DeepSpeech / Coqui STT .tflite model or TensorFlow checkpoint into a harken checkpoint",
    )
    add_options(import_model, "import_model", ImportModelOptions, switch=True)
    _add_lm_commands(commands)
    _add_adapt_command(commands)
    shard = commands.add_parser("shard", help="pack a corpus into tar shards that train like its CSV")
    add_options(shard, "shard", ShardOptions)
    alphabet = commands.add_parser("alphabet", help="the alphabet that spells the CSV manifests' transcripts")
    add_options(alphabet, "alphabet", AlphabetOptions)
    _add_serve_command(commands)
    _add_import_command(commands)
    return parser


def _add_import_command(commands: Any) -> None:
    from harken.importers import IMPORTERS, ImportPaths

    importer = commands.add_parser("import", help="turn a corpus into DeepSpeech CSV manifests")
    kinds = importer.add_subparsers(dest="corpus", metavar="CORPUS", required=True)
    for name, entry in IMPORTERS.items():
        sub = kinds.add_parser(name, help=entry.help)
        names = ("source", "target", "progress") if entry.source else ("target", "progress")
        add_options(sub, "paths", ImportPaths, names, switch=True, helps={"source": entry.source})
        add_options(sub, "importer", entry.config, switch=True)
