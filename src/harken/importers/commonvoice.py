"""Mozilla Common Voice: an extracted release folder to DeepSpeech CSVs, as DeepSpeech's import_cv2.py did.

A release folder (one language of ``cv-corpus-<version>``) holds ``train.tsv``, ``dev.tsv``, ``test.tsv``,
``validated.tsv``, ``other.tsv`` ... (tab-separated, with the columns ``client_id``, ``path``, ``sentence``,
``up_votes``, ``down_votes`` and more) and ``clips/*.mp3``. Each clip of the chosen splits becomes
``TARGET/clips/<name>.wav`` (mono 16-bit PCM at ``sample_rate``) and each split ``TARGET/<split>.csv``.

Transcripts are cleaned as import_cv2.py's label validation did (lowercase, punctuation removed, rejected
when they hold digits or symbols, optionally NFKD-normalised to ASCII and filtered by an alphabet); clips
too short for their transcript or longer than ``max_duration`` (10 s, as DeepSpeech) are skipped.

The split ``train-all`` is DeepSpeech's too: every validated clip except those whose sentence or speaker
occurs in dev or test, which gives far more training data than ``train.tsv``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from harken.config import comma_list, option, require
from harken.importers.corpus import (
    ImportConfig,
    Skip,
    Utterance,
    check_source,
    check_target,
    clean_label,
    run,
)

__all__ = ["CommonVoiceConfig", "prepare"]

_EXPECTED = "a Common Voice release folder holding train.tsv, dev.tsv, test.tsv and clips/"
_TRAIN_ALL = "train-all"
_NAME = re.compile(r"[\w.-]+")
_COLUMNS = ("path", "sentence")


@dataclass(frozen=True)
class CommonVoiceConfig(ImportConfig):
    """Which splits to import, and where the clips are."""

    max_duration: float = option(
        10.0, "skip utterances longer than this many seconds (0: no limit; 10: DeepSpeech's MAX_SECS)"
    )
    splits: tuple[str, ...] = option(
        ("train", "dev", "test"),
        "comma-separated .tsv names (validated, other ...) or train-all",
        parse=comma_list,
        metavar="NAMES",
    )
    audio_dir: Path | None = option(None, "the mp3 clips (default: SOURCE/clips)")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.splits), "splits", "''", "one split name or more")
        for split in self.splits:
            require(
                bool(_NAME.fullmatch(split)),
                "splits",
                repr(split),
                "split names such as train, dev or validated",
            )


def _read_tsv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a Common Voice .tsv (no quoting: sentences hold quote marks as they are)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            rows = list(reader)
            header = reader.fieldnames or []
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except csv.Error as error:
        raise ValueError(f"{path}: not a valid .tsv file ({error})") from None
    missing = [name for name in columns if name not in header]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)} (found {', '.join(header) or 'none'})")
    return rows


def _find_tsv(source: Path, split: str) -> Path:
    path = source / f"{split}.tsv"
    if path.is_file():
        return path
    found = sorted(p.stem for p in source.glob("*.tsv"))
    if found:
        raise ValueError(f"{path}: no such file ({source} has {', '.join(found)}; choose with --splits)")
    languages = sorted(p.parent.name for p in source.glob("*/train.tsv"))
    hint = f"; give one of its language folders: {', '.join(languages)}" if languages else ""
    raise ValueError(f"{source}: no .tsv files (expected {_EXPECTED}){hint}")


def _key(sentence: str) -> str:
    try:
        return clean_label(sentence)
    except Skip:
        return " ".join(sentence.lower().split())


def _train_all(source: Path) -> list[dict[str, str]]:
    """Validated clips whose sentence and speaker are in neither dev nor test (DeepSpeech's train-all)."""
    sentences: set[str] = set()
    speakers: set[str] = set()
    for split in ("dev", "test"):
        path = source / f"{split}.tsv"
        if path.is_file():
            for row in _read_tsv(path, ("client_id", "path", "sentence")):
                sentences.add(_key(row["sentence"] or ""))
                speakers.add(row["client_id"] or "")
    rows = _read_tsv(_find_tsv(source, "validated"), ("client_id", "path", "sentence"))
    return [
        row
        for row in rows
        if row["client_id"] not in speakers and _key(row["sentence"] or "") not in sentences
    ]


def _clip(audio_dir: Path, name: str) -> Path:
    """The clip a row names (releases before 2019 named clips without their .mp3 suffix)."""
    path = audio_dir / name
    return path if path.suffix.lower() == ".mp3" or path.is_file() else path.with_name(f"{name}.mp3")


def prepare(
    source: Path, target: Path, config: CommonVoiceConfig = CommonVoiceConfig(), progress: bool = True
) -> list[Path]:
    """Import the release folder ``source`` into ``target``; return the CSV paths, one per split."""
    source, target = check_source(Path(source), _EXPECTED), check_target(Path(target))
    tables = {
        split: _train_all(source) if split == _TRAIN_ALL else _read_tsv(_find_tsv(source, split), _COLUMNS)
        for split in config.splits
    }
    audio_dir = Path(config.audio_dir) if config.audio_dir else source / "clips"
    if not audio_dir.is_dir():
        raise ValueError(f"{audio_dir}: no such folder (the clips; give another with --audio_dir)")
    utterances = []
    for split, rows in tables.items():
        for row in rows:
            name = (row["path"] or "").strip()
            if name:
                clip = _clip(audio_dir, name)
                wav = target / "clips" / f"{clip.stem}.wav"
                utterances.append(Utterance(f"{split}.csv", clip, wav, row["sentence"] or ""))
    return run("commonvoice", utterances, target, [f"{split}.csv" for split in tables], config, progress)
