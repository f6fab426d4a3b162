"""The ``harken`` command: the only place that reads argv and the environment. Parsers come from
``arguments``; this runs the command they parse. Every error a user can cause ends in one line on stderr
and exit status 2 (set HARKEN_DEBUG=1 to get the traceback instead).
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from harken.arguments import (
    AlphabetOptions,
    ImportModelOptions,
    ModelSource,
    ShardOptions,
    TranscribeOptions,
    build_parser,
    config_from_args,
    given_options,
    section_options,
)
from harken.config import Config, ExportConfig, data_folder

if TYPE_CHECKING:
    from harken.inference import Model

__all__ = ["HANDLERS", "build_parser", "config_from_args", "main"]


def _config(args: argparse.Namespace) -> Config:
    """The Config the command line stands for, harken's data folder taken from $XDG_DATA_HOME."""
    config = config_from_args(args)
    if os.environ.get("XDG_DATA_HOME"):
        folder = data_folder(os.environ["XDG_DATA_HOME"]) / "checkpoints"
        config = replace(config, checkpoint=replace(config.checkpoint, default_dir=str(folder)))
    return config


def run_train(args: argparse.Namespace) -> int:
    """Train; then, with --export_dir (as DeepSpeech's training did), export the model it picks."""
    from harken.train import train

    config = _config(args)
    given = given_options(args)["export"]
    exporting = ExportConfig(**given)  # checked before hours of training, not after
    if given and not exporting.export_dir:
        raise ValueError(f"--{next(iter(given))} is an export option: give --export_dir too")
    result = train(config, environ=os.environ)
    if result.main:  # under torchrun: rank 0 only
        print(f"Checkpoints in {result.checkpoint_dir}")
        if exporting.export_dir:
            _export(result.checkpoint_dir, config.checkpoint.load_evaluate, exporting)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from harken.evaluate import test_checkpoint

    config = _config(args)
    if not config.data.test_files:
        raise ValueError("no --test_files given")
    test_checkpoint(config, config.load_dir)
    return 0


MODEL_SUFFIXES = (".onnx", ".tflite", ".pt")  # the files harken.inference.Model loads; else a directory


def _model_source(args: argparse.Namespace, config: Config) -> Path:
    """The model ``transcribe`` and ``serve`` load: --model, else the checkpoint directory. ValueError,
    one line naming the flag, when neither is given (and the default directory does not exist) or what is
    named cannot be a model."""
    model = section_options(args, "source", ModelSource).model
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

    config = _config(args)
    options = section_options(args, "transcribe", TranscribeOptions)
    paths, repeats = transcribe.unique(transcribe.expand(options.audio))
    names: dict[Path, Path] = {}
    if options.output_dir is not None:  # every input its own file, checked before any is written
        files = [path for path in paths if not path.is_dir()]
        names = transcribe.output_names(files, options.output_format, options.output_dir)
        transcribe.check_output_folder(options.output_dir, list(names.values()))
    source = _model_source(args, config)
    device = str(choose_device(config.runtime.device))
    model = Model(
        source,
        device=device,
        load_evaluate=config.checkpoint.load_evaluate,
        batch_segments=options.batch_segments,
    )
    model.set_decoder(config.decoder)
    for path in dict.fromkeys(repeats):  # each once, however often it was given
        print(f"harken: note: {path} is given more than once: transcribed once", file=sys.stderr)
    return _transcribe_all(options, model, paths, names)


def _transcribe_all(
    options: TranscribeOptions, model: Model, paths: list[Path], names: dict[Path, Path]
) -> int:
    """Transcribe ``paths``, printing each result or writing it to its name in ``names`` (--output_dir);
    the exit status (see run_transcribe)."""
    from harken import formats, transcribe
    from harken.storage import atomic_write
    from harken.summary import ProgressBar

    failures = 0
    show = options.output_dir is not None and sys.stderr.isatty()
    with ProgressBar("Transcribing", len(paths), show) as bar:
        for result in transcribe.transcribe_files(
            model, paths, options.vad_aggressiveness, num_results=options.candidate_transcripts
        ):
            bar.advance()
            if result.error or result.warning:
                failures += 1
                kind = "error" if result.error else "warning"
                print(f"harken: {kind}: {result.error or result.warning}", file=sys.stderr)
            if result.error:
                continue
            text = formats.render(result, options.output_format)
            if options.output_dir is not None:
                with atomic_write(names[result.path], "w", encoding="utf-8") as handle:
                    handle.write(text)
            elif options.output_format == "txt" and len(paths) > 1:
                print(f"{result.path}: {text}", end="")
            else:
                print(text, end="")
    return 2 if failures else 0


def run_export(args: argparse.Namespace) -> int:
    config = _config(args)
    options = ExportConfig(**given_options(args)["export"])
    if not options.export_dir:
        raise ValueError("no --export_dir given")
    _export(config.load_dir, config.checkpoint.load_evaluate, options)
    return 0


def _export(directory: Path, mode: str, options: ExportConfig) -> None:
    from harken import checkpoint
    from harken.export import export

    loaded = checkpoint.load_model(directory, mode)
    print(f"Exporting {loaded.path}")
    for result in export(loaded, options, Path(options.check_audio) if options.check_audio else None):
        print(f"Wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB): {result.parity}")


def run_import_model(args: argparse.Namespace) -> int:
    from harken import checkpoint

    options = section_options(args, "import_model", ImportModelOptions)
    path, loaded = checkpoint.import_model(options.model, options.output, options.alphabet_config_path)
    features = loaded.dims.features
    print(
        f"Imported {loaded.path}: n_hidden {loaded.dims.n_hidden}, {len(loaded.alphabet)} symbols + blank, "
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
        from harken.tuning import TuneConfig, tune

        tune(_config(args), section_options(args, "tune", TuneConfig))
        return 0
    given = given_options(args).get("lm", {})
    options = section_options(args, "lm", language_model.LmConfig)
    if not given.get("kenlm_bin") and os.environ.get("HARKEN_KENLM_BIN"):
        options = replace(options, kenlm_bin=os.environ["HARKEN_KENLM_BIN"])
    language_model.build(options, options.alphabet())
    return 0


def run_adapt(args: argparse.Namespace) -> int:
    from harken.adaptation import AdaptConfig, adapt

    options = section_options(args, "adapt", AdaptConfig)
    if not given_options(args).get("adapt", {}).get("kenlm_bin") and os.environ.get("HARKEN_KENLM_BIN"):
        options = replace(options, kenlm_bin=os.environ["HARKEN_KENLM_BIN"])
    adapt(options)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from harken.inference import Model
    from harken.model import choose_device
    from harken.server import ServerConfig, serve

    config = _config(args)
    server = section_options(args, "server", ServerConfig)
    if not server.api_key and os.environ.get("HARKEN_API_KEY"):
        server = replace(server, api_key=os.environ["HARKEN_API_KEY"])
    source = _model_source(args, config)
    device = str(choose_device(config.runtime.device))
    model = Model(
        source, threads=server.threads, device=device, load_evaluate=config.checkpoint.load_evaluate
    )
    model.set_decoder(config.decoder)
    serve(model, server, Path(source).name)
    return 0


def run_shard(args: argparse.Namespace) -> int:
    from harken import shards

    options = section_options(args, "shard", ShardOptions)
    shards.write(options.csv, options.output, options.shard_size)
    return 0


def run_alphabet(args: argparse.Namespace) -> int:
    from harken import alphabet, manifest
    from harken.storage import atomic_write

    options = section_options(args, "alphabet", AlphabetOptions)
    paths = manifest.split_files(options.csv)
    found, counts = alphabet.from_transcripts(
        sample.transcript for path in paths for sample in manifest.read_csv(path)
    )
    text = found.to_file_text()
    if options.output is None:
        print(text, end="")
    else:
        with atomic_write(options.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    shown = ", ".join(f"{symbol!r} {counts[symbol]:,}" for symbol in found.symbols)
    print(f"{len(found)} symbols in {', '.join(map(str, paths))}: {shown}", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from harken.importers import IMPORTERS, ImportPaths

    entry = IMPORTERS[args.corpus]
    paths = section_options(args, "paths", ImportPaths)
    for path in entry.prepare(paths, section_options(args, "importer", entry.config)):
        print(path)
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": run_train,
    "evaluate": run_evaluate,
    "transcribe": run_transcribe,
    "import": run_import,
    "lm": run_lm,
    "adapt": run_adapt,
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
