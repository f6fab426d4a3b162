"""TED-LIUM: talks cut into their transcribed segments, as DeepSpeech's import_ted.py did.

A release folder holds ``<split>/sph/<talk>.sph`` (NIST SPHERE audio) and ``<split>/stm/<talk>.stm``
for the splits ``train``, ``dev`` and ``test`` (TED-LIUM 3 keeps them under ``legacy/``, which is found
too). Each STM line is ``talk channel speaker start end <labels> transcript``; each segment becomes
``TARGET/<split>/<talk>-<start>-<end>.wav`` and each split ``TARGET/ted-<split>.csv`` (DeepSpeech's names).

Segments marked ``ignore_time_segment_in_scoring`` are skipped, as DeepSpeech did. The transcripts are
cleaned of TED-LIUM's markup: noise and filler tags (``{NOISE}``, ``{BREATH}``, ``<sil>``, ``[...]``) and
bracketed keys are dropped, pronunciation variants lose their number (``word(2)`` -> ``word``), and split
contractions are joined (``it 's`` -> ``it's``). A segment with an unknown word (``<unk>``) is skipped,
since its transcript misses a word that is spoken; ``drop_unk`` keeps it without the ``<unk>``.

The SPHERE files of TED-LIUM 2 and 3 are plain 16-bit PCM, which libsndfile reads; shorten-compressed
SPHERE (older LDC corpora) is not supported and is reported as unreadable audio.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harken.config import comma_list, option, require
from harken.importers.corpus import (
    ImportConfig,
    ImportReport,
    Skip,
    Utterance,
    check_source,
    check_target,
    read_text,
    run,
)

__all__ = ["TedConfig", "Segment", "clean_transcript", "parse_stm", "prepare"]

_EXPECTED = "a TED-LIUM release folder holding <split>/sph/*.sph and <split>/stm/*.stm"
IGNORED = "ignore_time_segment_in_scoring"
UNKNOWN_WORD = "unknown word <unk> in the transcript"
_MARKED = "marked ignore_time_segment_in_scoring"
_WORD_MARKERS = ("<unk>", "<sil>", "<s>", "</s>")
_VARIANT = re.compile(r"\(\d+\)$")
_SUFFIXES = ("'s", "'re", "'ve", "'ll", "'d", "'m", "'t")


@dataclass(frozen=True)
class TedConfig(ImportConfig):
    """Which splits to import, and what to do with unknown words."""

    splits: tuple[str, ...] = option(
        ("train", "dev", "test"), "comma-separated splits", parse=comma_list, metavar="NAMES"
    )
    drop_unk: bool = option(
        False, "keep segments with unknown words, dropping the <unk> (default: skip such segments)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.splits), "splits", "''", "one split name or more")


@dataclass(frozen=True)
class Segment:
    """One STM line: a time span of a talk and what is said in it."""

    talk: str
    start: str  # seconds, as the STM writes them (they name the wav)
    end: str
    transcript: str

    @property
    def span(self) -> tuple[float, float]:
        return float(self.start), float(self.end)


def parse_stm(path: Path) -> list[Segment]:
    """The segments of an STM file (``;;`` comment lines and blank lines are skipped)."""
    segments = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith(";;"):
            continue
        try:
            start, end = float(tokens[3]), float(tokens[4])
        except (IndexError, ValueError):
            raise ValueError(
                f"{path}:{number}: expected 'talk channel speaker start end <labels> transcript'"
            ) from None
        if not 0 <= start <= end:
            raise ValueError(f"{path}:{number}: the segment ends ({end}) before it starts ({start})")
        words = tokens[5:]
        if words and words[0].startswith("<") and words[0].lower() not in _WORD_MARKERS:
            words = words[1:]  # the labels field, e.g. <o,f0,male>
        segments.append(Segment(tokens[0], tokens[3], tokens[4], " ".join(words)))
    return segments


def clean_transcript(text: str, drop_unk: bool = False) -> str:
    """A TED-LIUM transcript without its markup (see the module's description); Skip on ``<unk>``."""
    words: list[str] = []
    for token in text.split():
        if token.lower() == "<unk>":
            if drop_unk:
                continue
            raise Skip(UNKNOWN_WORD, repr(text))
        if token[0] in "{[<" or (token[0] == "(" and token[-1] == ")"):
            continue  # {NOISE}, [laughter], <sil>, (talk-key)
        token = _VARIANT.sub("", token)
        if words and token.lower() in _SUFFIXES:
            words[-1] += token
        elif token:
            words.append(token)
    return " ".join(words)


def _split_folders(source: Path, splits: tuple[str, ...]) -> dict[str, Path]:
    for root in (source, source / "legacy"):
        found = {split: root / split for split in splits if (root / split / "stm").is_dir()}
        if found:
            missing = [split for split in splits if split not in found]
            if missing:
                raise ValueError(
                    f"{root}: no {', '.join(f'{split}/stm' for split in missing)} (choose with --splits)"
                )
            return found
    raise ValueError(f"{source}: no {splits[0]}/stm folder (expected {_EXPECTED})")


def _utterances(
    split: str, folder: Path, target: Path, config: TedConfig, report: ImportReport
) -> Iterator[Utterance]:
    for stm in sorted((folder / "stm").glob("*.stm")):
        sph = folder / "sph" / f"{stm.stem}.sph"
        for segment in parse_stm(stm):
            where = f"{sph} {segment.start}-{segment.end} s"
            if segment.transcript == IGNORED:
                report.skip(_MARKED, where)
                continue
            try:
                text = clean_transcript(segment.transcript, config.drop_unk)
            except Skip as skip:
                report.skip(skip.reason, where, skip.detail)
                continue
            wav = target / split / f"{stm.stem}-{segment.start}-{segment.end}.wav"
            yield Utterance(f"ted-{split}.csv", sph, wav, text, segment.span)


def prepare(source: Path, target: Path, config: TedConfig = TedConfig(), progress: bool = True) -> list[Path]:
    """Import the release folder ``source`` into ``target``; return the CSV paths, one per split."""
    source, target = check_source(Path(source), _EXPECTED), check_target(Path(target))
    folders = _split_folders(source, config.splits)
    report = ImportReport("ted")
    utterances = [
        utterance
        for split, folder in folders.items()
        for utterance in _utterances(split, folder, target, config, report)
    ]
    csvs = [f"ted-{split}.csv" for split in folders]
    return run("ted", utterances, target, csvs, config, progress, report)
