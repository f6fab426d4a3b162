"""A folder of recordings, each with a same-named ``.txt`` transcript, to DeepSpeech CSVs.

Every audio file under SOURCE (recursively; any format libsndfile reads: wav, flac, ogg, opus, mp3,
SPHERE ...) with a ``.txt`` file of the same name beside it (``a/b.flac`` + ``a/b.txt``) becomes a row.
Audio that already is a mono 16-bit PCM wav at ``sample_rate`` is used where it is; anything else
(another format, rate or channel count) is converted to ``TARGET/wav/<same relative path>.wav``.
Transcripts are cleaned as the other importers do (lowercase, no punctuation ...).

By default every row goes to ``TARGET/all.csv``. With ``dev_fraction`` or ``test_fraction`` the rows are
split into ``train.csv``, ``dev.csv`` and ``test.csv`` by a hash of each file's relative path and the
seed: the same file always lands in the same split, also when files are added to the folder later.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from harken import audio
from harken.config import option, require
from harken.importers.corpus import (
    ImportConfig,
    ImportReport,
    Utterance,
    check_source,
    check_target,
    read_text,
    run,
)

__all__ = ["AUDIO_SUFFIXES", "FolderConfig", "prepare"]

AUDIO_SUFFIXES = audio.AUDIO_SUFFIXES  # one list and one filter (audio.audio_files): `harken transcribe DIR`
# takes the files this imports
_EXPECTED = "a folder of audio files, each with a same-named .txt transcript"
NO_TRANSCRIPT = "no .txt transcript beside the audio file"
DUPLICATE = "another audio file has the same name (the .wav, or the first by suffix, is used)"
UNREADABLE_TEXT = "unreadable transcript file"


@dataclass(frozen=True)
class FolderConfig(ImportConfig):
    """How to split the rows (both fractions 0: one all.csv)."""

    dev_fraction: float = option(0.0, "share of the files for dev.csv (both fractions 0: all in all.csv)")
    test_fraction: float = option(0.0, "share of the files for test.csv")
    seed: int = option(1234, "of the split")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("dev_fraction", "test_fraction"):
            require(0.0 <= getattr(self, name) < 1.0, name, getattr(self, name), "in [0, 1)")
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise ValueError("--dev_fraction and --test_fraction together must leave some training data")

    @property
    def csvs(self) -> list[str]:
        if not (self.dev_fraction or self.test_fraction):
            return ["all.csv"]
        return ["train.csv"] + ["dev.csv"] * bool(self.dev_fraction) + ["test.csv"] * bool(self.test_fraction)


def split_of(relative: str, config: FolderConfig) -> str:
    """The CSV a file goes to: a uniform draw from a hash of its relative path and the seed."""
    if not (config.dev_fraction or config.test_fraction):
        return "all.csv"
    digest = hashlib.sha256(f"{config.seed}:{relative}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    if draw < config.test_fraction:
        return "test.csv"
    return "dev.csv" if draw < config.test_fraction + config.dev_fraction else "train.csv"


def _preference(path: Path) -> tuple[bool, str]:
    """Of several audio files for one transcript: a wav first, else the first suffix alphabetically."""
    return (path.suffix.lower() != ".wav", path.suffix.lower())


def _pairs(files: dict[Path, Path], report: ImportReport) -> list[tuple[Path, Path]]:
    """(audio, transcript) pairs, one per transcript; what has no transcript, or a rival, is skipped."""
    groups: dict[Path, list[Path]] = {}
    for path, text in files.items():
        groups.setdefault(text, []).append(path)
    pairs = []
    for text, paths in groups.items():
        if not text.is_file():
            for path in paths:
                report.skip(NO_TRANSCRIPT, str(path))
            continue
        best = min(paths, key=_preference)
        for path in paths:
            if path != best:
                report.skip(DUPLICATE, str(path), f"{best.name} is used")
        pairs.append((best, text))
    return sorted(pairs)


def prepare(
    source: Path, target: Path, config: FolderConfig = FolderConfig(), progress: bool = True
) -> list[Path]:
    """Import the recordings under ``source`` into ``target``; return the CSV paths."""
    source, target = check_source(Path(source), _EXPECTED), check_target(Path(target))
    absolute = Path(os.path.abspath(target))
    skip = {absolute / "wav"} | ({absolute} if absolute != Path(os.path.abspath(source)) else set())
    files = {path: path.with_suffix(".txt") for path in audio.audio_files(source, skip)}  # audio: its .txt
    if not files:
        raise ValueError(f"{source}: no audio files (expected {_EXPECTED})")
    report = ImportReport("folder")
    utterances = []
    for path, text in _pairs(files, report):
        try:
            transcript = read_text(text)
        except ValueError as error:
            report.skip(UNREADABLE_TEXT, str(text), str(error).split(": ", 1)[-1])
            continue
        relative = path.relative_to(source)
        wav = target / "wav" / relative.with_suffix(".wav")
        utterances.append(Utterance(split_of(relative.as_posix(), config), path, wav, transcript, as_is=True))
    return run("folder", utterances, target, config.csvs, config, progress, report)
