"""Which files of a folder are audio: one list of suffixes and one filter, so that ``harken transcribe DIR``
takes exactly the files ``harken import folder`` imports."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

# What libsndfile (and its mpg123 / opus support) reads.
AUDIO_SUFFIXES = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".snd"}
    | {".sph", ".nist", ".w64", ".rf64", ".caf", ".voc"}
)


def hidden(name: str) -> bool:
    """A hidden file or folder name (``.Trash``, macOS's ``._x.wav`` resource forks): left out."""
    return name.startswith(".")


def audio_files(folder: Path, leave_out: Collection[Path] = ()) -> list[Path]:
    """The audio files under ``folder``, recursively, sorted: files with a suffix in AUDIO_SUFFIXES (any
    case), hidden ones and hidden folders' contents left out, and the folders in ``leave_out`` (absolute
    paths: an importer's own output). Symbolic links to folders are not followed."""
    found: list[Path] = []
    for where, subfolders, files in os.walk(folder):
        here = Path(where)
        subfolders[:] = [
            name
            for name in subfolders
            if not hidden(name) and Path(os.path.abspath(here / name)) not in leave_out
        ]
        found.extend(
            here / name
            for name in files
            if not hidden(name) and Path(name).suffix.lower() in AUDIO_SUFFIXES and (here / name).is_file()
        )
    return sorted(found)
