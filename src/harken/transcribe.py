"""Files, folders and globs in, transcripts out, through the ``Model`` API (any model harken loads)."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harken import audio, features
from harken.inference import Model

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf"}


@dataclass(frozen=True)
class Transcript:
    path: Path
    text: str = ""
    duration: float = 0.0
    error: str = ""  # one line when the file could not be transcribed


def expand(inputs: Iterable[str | Path]) -> list[Path]:
    """Files, folders (their audio files, recursively, sorted) and glob patterns, as a list of paths.

    Inputs that match nothing are kept, so the caller reports them as missing.
    """
    paths: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            paths.extend(
                sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            )
        elif not path.exists() and glob.has_magic(text):
            paths.extend(Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file())
        else:
            paths.append(path)
    return paths


def transcribe_files(model: Model, paths: Iterable[Path]) -> Iterator[Transcript]:
    """One Transcript per path (any format and rate, converted to the model's); unreadable or too-short
    files give a Transcript with ``error`` set, and the others go on."""
    rate = model.sample_rate
    cfg = model.config.features
    for path in paths:
        try:
            samples = audio.read(path, rate)
        except audio.AudioError as error:
            yield Transcript(path, error=str(error))
            continue
        if features.n_frames(len(samples), cfg) == 0:
            yield Transcript(path, error=f"{path}: shorter than one {cfg.feature_win_len} ms feature window")
            continue
        text = model.stt(samples)
        yield Transcript(path, " ".join(text.split()), len(samples) / rate)
