"""Corpus importers: each one writes DeepSpeech CSVs (``wav_filename,wav_filesize,transcript``) into a folder.

``IMPORTERS`` maps an importer's name to its entry: its options (a config dataclass of ``option`` fields,
from which ``harken import NAME`` takes its flags) and the function that runs it (each importer module's
``prepare(source, target, config, progress) -> list of CSV paths``; the synthetic corpus has no source).
``corpus`` holds what the corpus importers share: transcript clean-up, resumable conversion to wav,
the import report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harken.config import option
from harken.importers import commonvoice, folder, ldc93s1, librispeech, synthetic, ted


@dataclass(frozen=True)
class ImportPaths:
    """Where an import reads (``source``: the corpus) and writes (``target``), and whether it shows a
    progress bar."""

    source: Path = option(Path(), "the corpus", positional=True)
    target: Path = option(Path(), "folder to write the wavs and CSVs into", positional=True)
    progress: bool = option(True, "show a progress bar (--noprogress: none)")


@dataclass(frozen=True)
class Importer:
    help: str
    config: type[Any]  # its options: a dataclass of option() fields
    prepare: Callable[[ImportPaths, Any], list[Path]]
    source: str = ""  # what its SOURCE argument is; empty: it reads none


IMPORTERS: dict[str, Importer] = {
    "synthetic": Importer(
        help="synthesise a multi-voice English corpus with espeak-ng (offline; the demo's data)",
        config=synthetic.SyntheticConfig,
        prepare=lambda paths, config: synthetic.prepare(paths.target, config, paths.progress),
    ),
    "commonvoice": Importer(
        help="Mozilla Common Voice: a release folder's .tsv files and mp3 clips",
        config=commonvoice.CommonVoiceConfig,
        prepare=lambda p, config: commonvoice.prepare(p.source, p.target, config, p.progress),
        source="an extracted Common Voice release folder (the .tsv files and clips/)",
    ),
    "librispeech": Importer(
        help="LibriSpeech: flac and .trans.txt files, one CSV per subset",
        config=librispeech.LibriSpeechConfig,
        prepare=lambda p, config: librispeech.prepare(p.source, p.target, config, p.progress),
        source="an extracted LibriSpeech tree (LibriSpeech/ or one subset folder)",
    ),
    "ted": Importer(
        help="TED-LIUM: talks cut into their STM segments, one CSV per split",
        config=ted.TedConfig,
        prepare=lambda p, config: ted.prepare(p.source, p.target, config, p.progress),
        source="a TED-LIUM release folder (<split>/sph and <split>/stm)",
    ),
    "ldc93s1": Importer(
        help="LDC93S1, DeepSpeech's one-sentence smoke test",
        config=ldc93s1.LDC93S1Config,
        prepare=lambda p, config: ldc93s1.prepare(p.source, p.target, config, p.progress),
        source="a folder holding LDC93S1.wav and LDC93S1.txt",
    ),
    "folder": Importer(
        help="a folder of audio files, each with a same-named .txt transcript",
        config=folder.FolderConfig,
        prepare=lambda p, config: folder.prepare(p.source, p.target, config, p.progress),
        source="a folder of audio files, each with a same-named .txt transcript",
    ),
}
