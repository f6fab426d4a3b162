"""The ``harken`` command: the only place that reads argv.

Options are generated from the config dataclasses (one declaration each, DeepSpeech's names). Boolean
options take DeepSpeech's forms: ``--early_stop``, ``--early_stop true``, ``--early_stop=false``,
``--noearly_stop``. Every error a user can cause ends in one line on stderr and exit status 2
(set HARKEN_DEBUG=1 to get the traceback instead).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import select
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from harken.inference import Model

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


def run_train(args: argparse.Namespace) -> int:
    from harken.train import train

    config = config_from_args(args)
    result = train(config)
    if result.main:  # under torchrun: rank 0 only
        print(f"Checkpoints in {result.checkpoint_dir}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from harken.evaluate import test_checkpoint

    config = config_from_args(args)
    if not config.data.test_files:
        raise ValueError("no --test_files given")
    test_checkpoint(config, config.load_dir)
    return 0


MODEL_SUFFIXES = (".onnx", ".tflite", ".pt")  # the files harken.inference.Model loads; else a directory


def _model_source(args: argparse.Namespace, config: Config) -> Path:
    """The model ``transcribe`` and ``serve`` load: --model, else the checkpoint directory. ValueError,
    one line naming the flag, when neither is given (and the default directory does not exist) or what is
    named cannot be a model."""
    model: Path | None = args.model
    expected = "expected a checkpoint directory, .onnx, .tflite or .pt"
    if model is not None:
        if not model.exists():
            raise ValueError(f"{model}: no such model file or checkpoint directory (--model)")
        if not model.is_dir() and model.suffix.lower() not in MODEL_SUFFIXES:
            raise ValueError(f"{model}: not a model ({expected})")
        return model
    directory = config.load_dir
    given = given_options(args)["checkpoint"]
    flag = "--load_checkpoint_dir" if given.get("load_checkpoint_dir") else "--checkpoint_dir"
    if directory.is_dir():
        return directory
    if not given.get("checkpoint_dir") and not given.get("load_checkpoint_dir"):
        raise ValueError(
            "no model given: name one with --model (a .onnx, .tflite or .pt file) or --checkpoint_dir "
            f"(the default, {directory}, does not exist)"
        )
    if directory.exists():
        raise ValueError(f"{directory}: not a checkpoint directory ({flag}; a model file goes to --model)")
    raise ValueError(f"{directory}: no such checkpoint directory ({flag}; a model file goes to --model)")


def run_transcribe(args: argparse.Namespace) -> int:
    """Exit status 0 when every file was transcribed whole, 2 when any could not be (an error) or only in
    part (truncated or damaged: a warning, and what could be read is transcribed)."""
    from harken import transcribe
    from harken.inference import Model
    from harken.model import choose_device

    config = config_from_args(args)
    if args.candidate_transcripts < 1:
        raise ValueError(f"--candidate_transcripts must be at least 1, got {args.candidate_transcripts}")
    paths, repeats = transcribe.unique(transcribe.expand(args.audio))
    names: dict[Path, Path] = {}
    if args.output_dir is not None:  # every input its own file, checked before any is written
        files = [path for path in paths if not path.is_dir()]
        names = transcribe.output_names(files, args.output_format, args.output_dir)
        transcribe.check_output_folder(args.output_dir, list(names.values()))
    source = _model_source(args, config)
    device = str(choose_device(config.train.device))
    model = Model(
        source,
        device=device,
        load_evaluate=config.checkpoint.load_evaluate,
        batch_segments=args.batch_segments,
    )
    model.set_decoder(config.decoder)
    for path in dict.fromkeys(repeats):  # each once, however often it was given
        print(f"harken: note: {path} is given more than once: transcribed once", file=sys.stderr)
    return _transcribe_all(args, model, paths, names)


def _transcribe_all(
    args: argparse.Namespace, model: Model, paths: list[Path], names: dict[Path, Path]
) -> int:
    """Transcribe ``paths``, printing each result or writing it to its name in ``names`` (--output_dir);
    the exit status (see run_transcribe)."""
    from harken import transcribe
    from harken.storage import atomic_write
    from harken.summary import ProgressBar

    failures = 0
    show = args.output_dir is not None and sys.stderr.isatty()
    with ProgressBar("Transcribing", len(paths), show) as bar:
        for result in transcribe.transcribe_files(
            model, paths, args.vad_aggressiveness, num_results=args.candidate_transcripts
        ):
            bar.advance()
            if result.error or result.warning:
                failures += 1
                kind = "error" if result.error else "warning"
                print(f"harken: {kind}: {result.error or result.warning}", file=sys.stderr)
            if result.error:
                continue
            text = transcribe.render(result, args.output_format)
            if args.output_dir is not None:
                with atomic_write(names[result.path], "w", encoding="utf-8") as handle:
                    handle.write(text)
            elif args.output_format == "txt" and len(paths) > 1:
                print(f"{result.path}: {text}", end="")
            else:
                print(text, end="")
    return 2 if failures else 0


def run_export(args: argparse.Namespace) -> int:
    from harken import checkpoint
    from harken.export import export

    config = config_from_args(args)
    options = ExportConfig(**given_options(args)["export"])
    if not options.export_dir:
        raise ValueError("no --export_dir given")
    loaded = checkpoint.load_model(config.load_dir, config.checkpoint.load_evaluate)
    print(f"Exporting {loaded.path}")
    for result in export(loaded, options, args.check_audio):
        print(f"Wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB): {result.parity}")
    return 0


def run_import_model(args: argparse.Namespace) -> int:
    from harken import checkpoint

    path, loaded = checkpoint.import_model(args.model, args.output, args.alphabet_config_path)
    features, model = loaded.config.features, loaded.config.model
    print(
        f"Imported {loaded.path}: n_hidden {model.n_hidden}, {len(loaded.alphabet)} symbols + blank, "
        f"{features.audio_sample_rate} Hz, {features.feature_win_len}/{features.feature_win_step} ms windows"
    )
    print(f"Wrote {path}")
    return 0


def run_lm(args: argparse.Namespace) -> int:
    from harken import language_model

    if args.lm_command == "setup":
        language_model.install_tools(Path(sys.prefix), print)
        return 0
    if args.lm_command == "tune":
        from harken.tuning import tune

        tune(config_from_args(args), args.n_trials, args.lm_alpha_max, args.lm_beta_max)
        return 0
    from harken.alphabet import Alphabet

    texts = tuple(Path(part) for part in args.text.split(",") if part)
    config = language_model.LmConfig(
        text=texts, output=args.output, order=args.order, top_k=args.top_k, prune=args.prune,
        memory=args.memory, default_alpha=args.default_alpha, default_beta=args.default_beta,
        max_oov_fraction=args.max_oov_fraction,
    )  # fmt: skip
    if args.bytes_output_mode and args.alphabet_config_path:
        raise ValueError("--bytes_output_mode builds a scorer of characters: give no --alphabet_config_path")
    language_model.build(config, None if args.bytes_output_mode else Alphabet.load(args.alphabet_config_path))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from harken.inference import Model
    from harken.model import choose_device
    from harken.server import ServerConfig, serve

    config = config_from_args(args)
    server = ServerConfig(**given_options(args).get("server", {}))
    source = _model_source(args, config)
    device = str(choose_device(config.train.device))
    model = Model(
        source, threads=server.threads, device=device, load_evaluate=config.checkpoint.load_evaluate
    )
    model.set_decoder(config.decoder)
    serve(model, server, Path(source).name)
    return 0


def run_shard(args: argparse.Namespace) -> int:
    from harken import shards

    shards.write(args.csv, args.output, args.shard_size)
    return 0


def run_alphabet(args: argparse.Namespace) -> int:
    from harken import alphabet, manifest
    from harken.storage import atomic_write

    paths = manifest.split_files(args.csv)
    found, counts = alphabet.from_transcripts(
        sample.transcript for path in paths for sample in manifest.read_csv(path)
    )
    text = found.to_file_text()
    if args.output is None:
        print(text, end="")
    else:
        with atomic_write(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    shown = ", ".join(f"{symbol!r} {counts[symbol]:,}" for symbol in found.symbols)
    print(f"{len(found)} symbols in {', '.join(map(str, paths))}: {shown}", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from harken.importers import IMPORTERS

    for path in IMPORTERS[args.corpus].run(args):
        print(path)
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": run_train,
    "evaluate": run_evaluate,
    "transcribe": run_transcribe,
    "import": run_import,
    "lm": run_lm,
    "alphabet": run_alphabet,
    "shard": run_shard,
    "import-model": run_import_model,
    "export": run_export,
    "serve": run_serve,
}


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """The library's warnings as one line each, like the errors."""
    print(f"harken: warning: {message}", file=sys.stderr)


def _stdout_gone() -> bool:
    """Whether standard output is a pipe or socket whose reader has closed it."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no real stdout
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return HANDLERS[args.command](args)
    except KeyboardInterrupt as interrupt:  # Ctrl-C (130), or SIGTERM where a command turns it into one
        print(f"harken: {getattr(interrupt, 'reason', 'interrupted')}", file=sys.stderr)
        return int(getattr(interrupt, "exit_code", 130))
    except BrokenPipeError as error:
        if not _stdout_gone():  # another pipe or socket: an error like any other
            print(f"harken: error: {error.strerror or 'broken pipe'}", file=sys.stderr)
            return 2
        # the reader of our output went away (`harken ... | head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit
        return 141  # 128 + SIGPIPE
    except (ValueError, RuntimeError, OSError) as error:
        if os.environ.get("HARKEN_DEBUG"):
            raise
        if isinstance(error, OSError) and error.filename is not None:
            message = f"{error.filename}: {error.strerror}"
        else:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"harken: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
