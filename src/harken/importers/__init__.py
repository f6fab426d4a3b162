"""Corpus importers: each one writes DeepSpeech CSVs (``wav_filename,wav_filesize,transcript``) into a folder.

``IMPORTERS`` maps an importer's name to its entry: the command-line options it takes and the function
that runs it (each importer module's ``prepare(target, config) -> list of CSV paths``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harken.importers import synthetic


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
    )
    return synthetic.prepare(args.target, config, progress=args.progress)


IMPORTERS: dict[str, Importer] = {
    "synthetic": Importer(
        help="synthesise a multi-voice English corpus with espeak-ng (offline; the demo's data)",
        add_arguments=_synthetic_arguments,
        run=_synthetic_run,
    ),
}
