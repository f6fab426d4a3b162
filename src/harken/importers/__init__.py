"""Corpus importers: each one writes DeepSpeech CSVs (``wav_filename,wav_filesize,transcript``) into a folder.

``IMPORTERS`` maps an importer's name to its entry: the command-line options it takes and the function
that runs it (each importer module's ``prepare(source, target, config) -> list of CSV paths``; the
synthetic corpus has no source: ``prepare(target, config)``). ``_common`` holds what the corpus importers
share: transcript clean-up, resumable conversion to wav, the import report.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harken.importers import commonvoice, folder, ldc93s1, librispeech, synthetic, ted
from harken.importers._common import ImportConfig, split_names


@dataclass(frozen=True)
class Importer:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], list[Path]]


def _voices(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _synthetic_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = synthetic.SyntheticConfig()
    parser.add_argument("target", type=Path, help="folder to write wav/ and train/dev/test CSVs into")
    parser.add_argument("--n_sentences", type=int, default=defaults.n_sentences, help="distinct sentences")
    parser.add_argument(
        "--text_file",
        type=Path,
        default=None,
        help="one sentence per line (default: the built-in command grammar)",
    )
    parser.add_argument(
        "--train_voices",
        type=_voices,
        default=defaults.train_voices,
        help="comma-separated espeak-ng voices for training, e.g. en+m1,en-us+f2",
    )
    parser.add_argument(
        "--test_voices",
        type=_voices,
        default=defaults.test_voices,
        help="comma-separated held-out voices for dev and test",
    )
    parser.add_argument("--dev_fraction", type=float, default=defaults.dev_fraction)
    parser.add_argument("--sample_rate", type=int, default=defaults.sample_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--clean",
        action="store_true",
        help="training speech alone, as espeak-ng says it (default: half of it as spoken, half with "
        "silence around it, background noise or a telephone line, all at levels from -35 to -1 dBFS, and "
        "recordings with nobody speaking, as real recordings have)",
    )
    parser.add_argument("--noprogress", dest="progress", action="store_false", help="no progress bar")


def _synthetic_run(args: argparse.Namespace) -> list[Path]:
    config = synthetic.SyntheticConfig(
        n_sentences=args.n_sentences,
        train_voices=args.train_voices,
        test_voices=args.test_voices,
        dev_fraction=args.dev_fraction,
        sample_rate=args.sample_rate,
        seed=args.seed,
        text_file=args.text_file,
        conditions=None if args.clean else synthetic.SyntheticConfig().conditions,
    )
    return synthetic.prepare(args.target, config, progress=args.progress)


def _common_arguments(parser: argparse.ArgumentParser, defaults: ImportConfig, source: str) -> None:
    """SOURCE, TARGET and the options every corpus importer takes."""
    parser.add_argument("source", type=Path, help=source)
    parser.add_argument("target", type=Path, help="folder to write the wavs and CSVs into")
    parser.add_argument(
        "--filter_alphabet",
        type=Path,
        default=None,
        help="alphabet file: skip transcripts with characters outside it",
    )
    parser.add_argument(
        "--normalize", action="store_true", help="NFKD-normalise transcripts to ASCII (café -> cafe)"
    )
    parser.add_argument(
        "--sample_rate",
        type=int,
        default=defaults.sample_rate,
        help=f"of the wavs written (default: {defaults.sample_rate})",
    )
    parser.add_argument(
        "--max_duration",
        type=float,
        default=defaults.max_duration,
        help=f"skip utterances longer than this (seconds; 0: no limit; default: {defaults.max_duration:g})",
    )
    parser.add_argument(
        "--jobs", type=int, default=0, help="conversion processes (default: 0, one per CPU core)"
    )
    parser.add_argument("--noprogress", dest="progress", action="store_false", help="no progress bar")


def _common_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "sample_rate": args.sample_rate,
        "filter_alphabet": args.filter_alphabet,
        "normalize": args.normalize,
        "max_duration": args.max_duration,
        "jobs": args.jobs,
    }


def _commonvoice_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = commonvoice.CommonVoiceConfig()
    _common_arguments(
        parser, defaults, "an extracted Common Voice release folder (the .tsv files and clips/)"
    )
    parser.add_argument(
        "--splits",
        type=split_names,
        default=defaults.splits,
        help="comma-separated .tsv names (validated, other ...) or train-all (default: train,dev,test)",
    )
    parser.add_argument("--audio_dir", type=Path, default=None, help="the mp3 clips (default: SOURCE/clips)")


def _commonvoice_run(args: argparse.Namespace) -> list[Path]:
    config = commonvoice.CommonVoiceConfig(
        **_common_options(args), splits=args.splits, audio_dir=args.audio_dir
    )
    return commonvoice.prepare(args.source, args.target, config, progress=args.progress)


def _librispeech_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = librispeech.LibriSpeechConfig()
    _common_arguments(parser, defaults, "an extracted LibriSpeech tree (LibriSpeech/ or one subset folder)")
    parser.add_argument(
        "--subsets",
        type=split_names,
        default=defaults.subsets,
        help="comma-separated subsets, e.g. train-clean-100,dev-clean (default: every one found)",
    )


def _librispeech_run(args: argparse.Namespace) -> list[Path]:
    config = librispeech.LibriSpeechConfig(**_common_options(args), subsets=args.subsets)
    return librispeech.prepare(args.source, args.target, config, progress=args.progress)


def _ted_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ted.TedConfig()
    _common_arguments(parser, defaults, "a TED-LIUM release folder (<split>/sph and <split>/stm)")
    parser.add_argument(
        "--splits",
        type=split_names,
        default=defaults.splits,
        help="comma-separated (default: train,dev,test)",
    )
    parser.add_argument(
        "--drop_unk",
        action="store_true",
        help="keep segments with unknown words, dropping the <unk> (default: skip them)",
    )


def _ted_run(args: argparse.Namespace) -> list[Path]:
    config = ted.TedConfig(**_common_options(args), splits=args.splits, drop_unk=args.drop_unk)
    return ted.prepare(args.source, args.target, config, progress=args.progress)


def _ldc93s1_arguments(parser: argparse.ArgumentParser) -> None:
    _common_arguments(parser, ldc93s1.LDC93S1Config(), "a folder holding LDC93S1.wav and LDC93S1.txt")


def _ldc93s1_run(args: argparse.Namespace) -> list[Path]:
    config = ldc93s1.LDC93S1Config(**_common_options(args))
    return ldc93s1.prepare(args.source, args.target, config, progress=args.progress)


def _folder_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = folder.FolderConfig()
    _common_arguments(parser, defaults, "a folder of audio files, each with a same-named .txt transcript")
    parser.add_argument(
        "--dev_fraction",
        type=float,
        default=defaults.dev_fraction,
        help="share of the files for dev.csv (both fractions 0: everything in all.csv)",
    )
    parser.add_argument(
        "--test_fraction", type=float, default=defaults.test_fraction, help="share of the files for test.csv"
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help=f"of the split (default: {defaults.seed})"
    )


def _folder_run(args: argparse.Namespace) -> list[Path]:
    config = folder.FolderConfig(
        **_common_options(args),
        dev_fraction=args.dev_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    return folder.prepare(args.source, args.target, config, progress=args.progress)


IMPORTERS: dict[str, Importer] = {
    "synthetic": Importer(
        help="synthesise a multi-voice English corpus with espeak-ng (offline; the demo's data)",
        add_arguments=_synthetic_arguments,
        run=_synthetic_run,
    ),
    "commonvoice": Importer(
        help="Mozilla Common Voice: a release folder's .tsv files and mp3 clips",
        add_arguments=_commonvoice_arguments,
        run=_commonvoice_run,
    ),
    "librispeech": Importer(
        help="LibriSpeech: flac and .trans.txt files, one CSV per subset",
        add_arguments=_librispeech_arguments,
        run=_librispeech_run,
    ),
    "ted": Importer(
        help="TED-LIUM: talks cut into their STM segments, one CSV per split",
        add_arguments=_ted_arguments,
        run=_ted_run,
    ),
    "ldc93s1": Importer(
        help="LDC93S1, DeepSpeech's one-sentence smoke test",
        add_arguments=_ldc93s1_arguments,
        run=_ldc93s1_run,
    ),
    "folder": Importer(
        help="a folder of audio files, each with a same-named .txt transcript",
        add_arguments=_folder_arguments,
        run=_folder_run,
    ),
}
