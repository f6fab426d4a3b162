"""The command line's arguments: every command's parser, its options generated from the config dataclasses
(one declaration each, DeepSpeech's names), and the config a parsed command line stands for. Boolean
options take DeepSpeech's forms: ``--early_stop``, ``--early_stop true``, ``--early_stop=false``,
``--noearly_stop``. ``cli`` runs what these parse.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    TrainConfig,
)

SECTIONS: dict[str, tuple[type[Any], str]] = {
    "features": (FeatureConfig, "features (stored in the checkpoint)"),
    "model": (ModelConfig, "model geometry and dropout"),
    "data": (DataConfig, "data"),
    "checkpoint": (CheckpointConfig, "checkpoints"),
    "train": (TrainConfig, "training, schedule and reports"),
    "export": (ExportConfig, "export"),
    "decoder": (DecoderConfig, "decoder (beam search and scorer)"),
}

# Which options each command has: section -> field names (None: all of the section).
COMMAND_OPTIONS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "train": {name: None for name in SECTIONS},
    "evaluate": {
        "data": ("test_files", "test_batch_size", "limit_test", "reverse_test", "num_workers"),
        "checkpoint": ("checkpoint_dir", "load_checkpoint_dir", "load_evaluate"),
        "train": ("report_count", "test_output_file", "show_progressbar", "device"),
        "decoder": None,
    },
    "export": {
        "checkpoint": ("checkpoint_dir", "load_checkpoint_dir", "load_evaluate"),
        "export": None,
    },
    "transcribe": {
        "checkpoint": ("checkpoint_dir", "load_checkpoint_dir", "load_evaluate"),
        "train": ("device",),
        "decoder": None,
    },
    "serve": {
        "checkpoint": ("checkpoint_dir", "load_checkpoint_dir", "load_evaluate"),
        "train": ("device",),
        "decoder": None,
    },
    "lm-tune": {
        "data": ("dev_files", "dev_batch_size", "limit_dev", "num_workers"),
        "checkpoint": ("checkpoint_dir", "load_checkpoint_dir", "load_evaluate"),
        "train": ("show_progressbar", "device"),
        "decoder": ("scorer_path", "beam_width", "cutoff_prob", "cutoff_top_n"),
    },
}


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_field(group: argparse._ArgumentGroup, section: str, f: dataclasses.Field[Any]) -> None:
    dest = f"{section}.{f.name}"
    default = f.default
    help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    if kind == "bool":
        group.add_argument(
            f"--{f.name}", dest=dest, type=parse_bool, nargs="?", const=True, metavar="BOOL", help=help_text
        )
        group.add_argument(f"--no{f.name}", dest=dest, action="store_false", help=argparse.SUPPRESS)
        return
    if kind == "tuple[str, ...]":
        group.add_argument(f"--{f.name}", dest=dest, action="append", metavar="SPEC", help=help_text)
        return
    types: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str, "float | None": float}
    group.add_argument(
        f"--{f.name}",
        *(f"--{alias}" for alias in f.metadata.get("aliases", ())),
        dest=dest,
        type=types.get(kind, str),
        metavar=kind.split(" ")[0].upper(),
        choices=f.metadata.get("choices"),
        help=help_text,
    )


def add_config_options(parser: argparse.ArgumentParser, command: str) -> None:
    for section, names in COMMAND_OPTIONS[command].items():
        cls, title = SECTIONS[section]
        group = parser.add_argument_group(title)
        for f in dataclasses.fields(cls):
            if names is None or f.name in names:
                _add_field(group, section, f)


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


def _prune(text: str) -> tuple[int, ...]:
    """lmplz's pruning thresholds: "0 0 1" or DeepSpeech's "0|0|1"."""
    try:
        return tuple(int(part) for part in text.replace("|", " ").replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like '0 0 1', got {text!r}") from None


def _add_lm_commands(commands: Any) -> None:
    from harken.language_model import LmConfig

    lm = commands.add_parser("lm", help="build a scorer (KenLM language model) from text, or tune it")
    kinds = lm.add_subparsers(dest="lm_command", metavar="ACTION", required=True)
    build = kinds.add_parser(
        "build", help="text corpus -> .scorer (generate_lm.py + generate_scorer_package)"
    )
    defaults = LmConfig(text=(), output=Path())
    build.add_argument(
        "--text",
        required=True,
        help="text: .txt or .gz, a sentence a line, or CSVs' transcripts; comma-joined",
    )
    build.add_argument("--output", type=Path, required=True, help="the .scorer file to write")
    build.add_argument("--order", "--arpa_order", type=int, default=defaults.order, help="n-gram order")
    build.add_argument(
        "--top_k", type=int, default=defaults.top_k, help="vocabulary: the most frequent words"
    )
    build.add_argument(
        "--prune", "--arpa_prune", type=_prune, default=defaults.prune,
        help="lmplz --prune: minimum count per order, e.g. '0 0 1' (drops singleton trigrams and up)",
    )  # fmt: skip
    build.add_argument(
        "--memory",
        "--max_arpa_memory",
        default=defaults.memory,
        help="memory lmplz may sort in (e.g. 25%%, 2G)",
    )
    build.add_argument("--default_alpha", type=float, default=defaults.default_alpha, help="stored LM weight")
    build.add_argument("--default_beta", type=float, default=defaults.default_beta, help="stored word bonus")
    build.add_argument(
        "--alphabet_config_path",
        help="the model's alphabet (default: English); words it cannot spell are left out",
    )
    build.add_argument(
        "--bytes_output_mode",
        action="store_true",
        help="a UTF-8 scorer for --bytes_output_mode models: each character is a word of the LM (as "
        "DeepSpeech's Mandarin scorers); for a language with spaces, a word scorer built with "
        "--alphabet_config_path serves byte models too",
    )
    build.add_argument(
        "--max_oov_fraction", type=float, default=defaults.max_oov_fraction,
        help="share of running words with characters outside the alphabet above which the text is refused",
    )  # fmt: skip
    tune = kinds.add_parser("tune", help="find alpha and beta on a dev set and store them in the scorer")
    tune.add_argument("--n_trials", type=int, default=100, help="decodings of the dev set to try")
    tune.add_argument("--lm_alpha_max", type=float, default=5.0, help="largest alpha tried")
    tune.add_argument("--lm_beta_max", type=float, default=5.0, help="largest beta tried")
    add_config_options(tune, "lm-tune")
    kinds.add_parser("setup", help="compile KenLM's lmplz and build_binary (needed by `lm build`) once")


def _add_serve_command(commands: Any) -> None:
    from harken.server import ServerConfig

    serve = commands.add_parser(
        "serve", help="a speech service: HTTP, WebSocket streaming and a browser page (see /v1/models)"
    )
    serve.add_argument(
        "--model",
        type=Path,
        help="a model file instead of --checkpoint_dir: .onnx or .pt (harken), .tflite (DeepSpeech/Coqui)",
    )
    group = serve.add_argument_group("service and limits")
    for f in dataclasses.fields(ServerConfig):
        _add_field(group, "server", f)
    add_config_options(serve, "serve")


def _add_transcribe_command(commands: Any) -> None:
    transcribe = commands.add_parser("transcribe", help="transcribe audio files, folders or globs")
    transcribe.add_argument("audio", nargs="+", help="audio files, folders or glob patterns")
    transcribe.add_argument(
        "--model",
        type=Path,
        help="a model file instead of --checkpoint_dir: .onnx or .pt (harken), .tflite (DeepSpeech/Coqui)",
    )
    transcribe.add_argument(
        "--output_format",
        default="txt",
        choices=("txt", "json", "srt", "vtt", "tsv"),
        help="txt (default), json (segments, word timings, confidence), srt, vtt or tsv",
    )
    transcribe.add_argument(
        "--json",
        dest="output_format",
        action="store_const",
        const="json",
        help="the same as --output_format json (DeepSpeech's client flag)",
    )
    transcribe.add_argument(
        "--candidate_transcripts",
        type=int,
        default=1,
        help="keep this many candidates per segment (the json output lists the others as alternatives)",
    )
    transcribe.add_argument(
        "--batch_segments",
        type=int,
        default=4,
        help="run a recording of 8 s or more as up to this many stretches side by side through the LSTM "
        "(faster for large models); 1 runs it in one pass, exactly as a stream does",
    )
    transcribe.add_argument(
        "--extended",
        action="store_true",
        help="accepted for DeepSpeech's client: it printed the same transcript through the metadata",
    )
    transcribe.add_argument(
        "--output_dir",
        type=Path,
        help="write <name>.<format> per file here (with a progress bar) instead of printing",
    )
    transcribe.add_argument(
        "--vad_aggressiveness",
        type=int,
        default=3,
        choices=(-1, 0, 1, 2, 3),
        help="how hard the voice-activity detector splits at pauses (0-3; -1: no splitting)",
    )
    add_config_options(transcribe, "transcribe")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    exporter.add_argument(
        "--check_audio", type=Path, help="speech to check the export on (default: espeak-ng)"
    )
    add_config_options(exporter, "export")
    import_model = commands.add_parser(
        "import-model",
        help="turn a DeepSpeech / Coqui STT .tflite model or TensorFlow checkpoint into a harken checkpoint",
    )
    import_model.add_argument(
        "model",
        type=Path,
        help="a .tflite file, or a TensorFlow checkpoint: its directory or prefix (release/best_dev-1466475)",
    )
    import_model.add_argument("--output", type=Path, required=True, help="an empty checkpoint directory")
    import_model.add_argument(
        "--alphabet_config_path",
        type=Path,
        help="a TensorFlow checkpoint's alphabet (default: alphabet.txt beside it, else English)",
    )
    _add_lm_commands(commands)
    shard = commands.add_parser("shard", help="pack a corpus into tar shards that train like its CSV")
    shard.add_argument("--from", dest="csv", required=True, help="CSV manifests, comma-joined")
    shard.add_argument("--output", type=Path, required=True, help="folder for shard-*.tar and the new CSV")
    shard.add_argument("--shard_size", type=int, default=1000, help="recordings per tar")
    alphabet = commands.add_parser("alphabet", help="the alphabet that spells the CSV manifests' transcripts")
    alphabet.add_argument("--from", dest="csv", required=True, help="CSV manifests, comma-joined")
    alphabet.add_argument("--output", type=Path, help="write the alphabet file here (default: print it)")
    _add_serve_command(commands)
    importer = commands.add_parser("import", help="turn a corpus into DeepSpeech CSV manifests")
    from harken.importers import IMPORTERS

    kinds = importer.add_subparsers(dest="corpus", metavar="CORPUS", required=True)
    for name, entry in IMPORTERS.items():
        sub = kinds.add_parser(name, help=entry.help)
        entry.add_arguments(sub)
    return parser
