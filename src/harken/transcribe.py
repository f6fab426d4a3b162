"""Files and folders in, transcripts out (greedy decoding of a checkpoint's model)."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from harken import audio, decoder, features
from harken.checkpoint import LoadedModel

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


def transcribe_samples(loaded: LoadedModel, samples: torch.Tensor) -> decoder.Decoded:
    """samples: [n_samples] float in [-1, 1] at the model's rate -> greedy transcript."""
    cfg = loaded.config.features
    device = next(loaded.model.parameters()).device
    mfcc = features.mfcc(samples.to(device), cfg).unsqueeze(0)  # [1, time, n_mfcc]
    windows = features.context_windows(mfcc, cfg.n_context)  # [1, time, n_input]
    with torch.inference_mode():
        log_probs, lengths, _ = loaded.model(windows)
    return decoder.greedy(log_probs[0], int(lengths[0]), loaded.alphabet)


def transcribe_files(loaded: LoadedModel, paths: Iterable[Path]) -> Iterator[Transcript]:
    """One Transcript per path; unreadable files give a Transcript with ``error`` set."""
    rate = loaded.config.features.audio_sample_rate
    for path in paths:
        try:
            samples = audio.read(path, rate)
        except audio.AudioError as error:
            yield Transcript(path, error=str(error))
            continue
        if features.n_frames(len(samples), loaded.config.features) == 0:
            window = loaded.config.features.feature_win_len
            yield Transcript(path, error=f"{path}: shorter than one {window} ms feature window")
            continue
        decoded = transcribe_samples(loaded, torch.from_numpy(samples))
        yield Transcript(path, " ".join(decoded.text.split()), len(samples) / rate)
