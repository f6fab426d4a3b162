"""What the corpus importers share: transcript clean-up, resumable audio conversion, the import report.

An importer lists its utterances (an audio file or a time span of one, the transcript as the corpus
writes it, the CSV it belongs to) and hands them to ``run``, which

1. cleans each transcript as DeepSpeech's importers did (``clean_label``) and skips the unusable ones;
2. converts the audio to mono 16-bit PCM wav at ``sample_rate`` (several processes at once), keeping every
   wav that an earlier run already wrote: wavs are written to a temporary name and renamed into place, so
   a wav that exists is complete, and re-running an interrupted import picks up where it stopped;
3. skips audio too short for its transcript (DeepSpeech's rule: fewer 20 ms steps than characters) or
   longer than ``max_duration``;
4. writes the DeepSpeech CSVs (``wav_filename,wav_filesize,transcript``) and prints the import report:
   what was kept (count, hours), what was skipped and why (count, examples).

A corrupt or missing audio file is a counted skip; a missing or unusable source folder is a ValueError
with one line naming it (the ``harken`` command prints it as ``harken: error: ...``).
"""

from __future__ import annotations

import os
import re
import signal
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from harken import audio, manifest
from harken.alphabet import Alphabet
from harken.config import option, require
from harken.summary import ProgressBar

# Skip reasons (the ones training's validation also has use its words).
MISSING = manifest.MISSING
UNREADABLE = manifest.UNREADABLE
EMPTY_AUDIO = manifest.EMPTY_AUDIO
EMPTY_TRANSCRIPT = manifest.EMPTY_TRANSCRIPT
OUT_OF_ALPHABET = manifest.OUT_OF_ALPHABET
TOO_SHORT = manifest.TOO_SHORT
UNSPOKEN = "digits or symbols in the transcript"
TOO_LONG = "audio longer than --max_duration"

# DeepSpeech's validate_label_eng rejected transcripts holding digits or any of ( < [ ] & * {: what is
# spoken there is not what is written. The closing brackets and a few more such symbols are added here.
_UNSPOKEN = re.compile(r"[\d()<>\[\]{}&*@#$%+=/\\|~^]")
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc`\u00b4", "'"))
_MADE, _KEPT, _AS_IS = "converted", "kept from an earlier run", "used in place"
_T = TypeVar("_T")
_R = TypeVar("_R")


class Skip(Exception):
    """An utterance that cannot be used: ``reason`` (counted in the report) and an optional detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class ImportConfig:
    """The options every importer takes; each importer's config adds its own."""

    sample_rate: int = option(16000, "sample rate of the wavs written")
    filter_alphabet: Path | None = option(None, "alphabet file: skip transcripts with characters outside it")
    normalize: bool = option(False, "NFKD-normalise transcripts to ASCII (café -> cafe)")
    max_duration: float = option(0.0, "skip utterances longer than this many seconds (0: no limit)")
    jobs: int = option(0, "conversion processes (0: one per CPU core)")

    def __post_init__(self) -> None:
        require(8000 <= self.sample_rate <= 192000, "sample_rate", self.sample_rate, "8000 to 192000 Hz")
        require(self.max_duration >= 0, "max_duration", self.max_duration, "0 (no limit) or more seconds")
        require(self.jobs >= 0, "jobs", self.jobs, "0 (one per CPU core) or more")


# --------------------------------------------------------------------------------------------------------
# Transcripts


def normalize_text(text: str, to_ascii: bool) -> str:
    """NFKD-decomposed with everything non-ASCII dropped (``--normalize``), else NFC-composed."""
    if to_ascii:
        return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return unicodedata.normalize("NFC", text)


def clean_label(text: str, to_ascii: bool = False) -> str:
    """A transcript as DeepSpeech's importers cleaned it: lowercase, no punctuation, single spaces.

    Raises ``Skip`` for a transcript holding digits or symbols such as ``&`` or ``<`` (what is spoken
    there is not what is written) and for one left empty. Hyphens, dashes and underscores become spaces;
    typographic apostrophes (’) become ``'``; every other punctuation mark (any script's) is removed.
    """
    text = normalize_text(text, to_ascii)
    found = _UNSPOKEN.search(text)
    if found:
        raise Skip(UNSPOKEN, f"{found.group()!r} in {text.strip()!r}")
    kept = []
    for char in text.translate(_APOSTROPHES):
        category = unicodedata.category(char)
        if char == "'" or not category.startswith("P"):
            kept.append(char)
        elif category in ("Pd", "Pc"):
            kept.append(" ")
    label = " ".join("".join(kept).lower().split())
    if not label:
        raise Skip(EMPTY_TRANSCRIPT)
    return label


class LabelFilter:
    """``clean_label``, then the alphabet check of ``--filter_alphabet`` (DeepSpeech's LabelFilter)."""

    def __init__(self, to_ascii: bool = False, alphabet: Alphabet | None = None) -> None:
        self.to_ascii, self.alphabet = to_ascii, alphabet

    @classmethod
    def from_config(cls, config: ImportConfig) -> LabelFilter:
        alphabet = Alphabet.from_file(config.filter_alphabet) if config.filter_alphabet else None
        return cls(config.normalize, alphabet)

    def __call__(self, text: str) -> str:
        label = clean_label(text, self.to_ascii)
        if self.alphabet is not None:
            unknown = self.alphabet.unknown(label)
            if unknown:
                raise Skip(OUT_OF_ALPHABET, repr("".join(unknown)))
        return label


def too_short(frames: int, sample_rate: int, label: str) -> bool:
    """DeepSpeech's importer rule: fewer 20 ms feature steps than transcript characters (CTC cannot fit)."""
    return frames * 50 // sample_rate < len(label)


# --------------------------------------------------------------------------------------------------------
# Sources


def check_source(source: Path, expected: str) -> Path:
    """``source`` if it is a folder with something in it; else ValueError naming it and what was expected."""
    source = Path(source)
    if not source.exists():
        raise ValueError(f"{source}: no such folder (expected {expected})")
    if not source.is_dir():
        raise ValueError(f"{source}: not a folder (expected {expected})")
    if not any(source.iterdir()):
        raise ValueError(f"{source}: the folder is empty (expected {expected})")
    return source


def check_target(target: Path) -> Path:
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target}: not a folder (the importer writes wavs and CSVs into it)")
    return target


def read_text(path: Path) -> str:
    """A UTF-8 text file (a byte-order mark is dropped); ValueError naming it when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror})") from None


# --------------------------------------------------------------------------------------------------------
# Audio


@dataclass(frozen=True)
class Utterance:
    """One CSV row to be: where its audio comes from, where its wav goes, what is said."""

    csv: str  # the CSV's file name, e.g. "train.csv"
    source: Path  # the audio file
    wav: Path  # the wav to write (it is kept when an earlier run wrote it)
    transcript: str  # as the corpus writes it; cleaned by run()
    span: tuple[float, float] | None = None  # start and end in seconds within source; None: all of it
    as_is: bool = False  # use source itself when it already is a mono 16-bit wav at the sample rate

    @property
    def where(self) -> str:
        """How the report names it."""
        return f"{self.source} {self.span[0]}-{self.span[1]} s" if self.span else str(self.source)


@dataclass(frozen=True)
class _Piece:
    wav: Path
    span: tuple[float, float] | None
    as_is: bool


@dataclass(frozen=True)
class _Job:
    """The pieces of one source file: read once, written as one wav each."""

    source: Path
    pieces: tuple[_Piece, ...]
    sample_rate: int


@dataclass(frozen=True)
class _Outcome:
    path: Path | None = None  # the wav the CSV names; None when the audio cannot be used
    frames: int = 0
    size: int = 0
    kind: str = ""  # _MADE, _KEPT or _AS_IS
    reason: str = ""  # why it cannot be used
    detail: str = ""


def _failure(source: Path, error: audio.AudioError) -> _Outcome:
    if not source.is_file():
        return _Outcome(reason=MISSING)
    message = str(error).split(": ", 1)[-1]
    if "holds no audio samples" in message:
        return _Outcome(reason=EMPTY_AUDIO)
    return _Outcome(reason=UNREADABLE, detail=message)


def _existing(piece: _Piece, source: Path, sample_rate: int) -> _Outcome | None:
    """The source itself when it may be used as it is, else a wav an earlier run wrote; None: neither."""
    for path, kind in ((source, _AS_IS), (piece.wav, _KEPT)) if piece.as_is else ((piece.wav, _KEPT),):
        frames = audio.wav_frames(path, sample_rate) if path.is_file() else 0
        if frames:
            return _Outcome(path, frames, path.stat().st_size, kind)
    return None


def _cut(samples: np.ndarray, span: tuple[float, float] | None, rate: int) -> np.ndarray:
    """The span's samples, as DeepSpeech's import_ted cut them: from int(start * rate), int(length * rate)."""
    if span is None:
        return samples
    start = int(span[0] * rate)
    return samples[start : start + int((span[1] - span[0]) * rate)]


def _convert(job: _Job) -> list[_Outcome]:
    """Each piece's wav: the source itself, kept from an earlier run, or converted now."""
    rate = job.sample_rate
    outcomes = [_existing(piece, job.source, rate) for piece in job.pieces]
    if all(outcomes):
        return [outcome for outcome in outcomes if outcome]
    try:
        samples = audio.read(job.source, rate)
    except audio.AudioError as error:
        failed = _failure(job.source, error)
        return [outcome or failed for outcome in outcomes]
    done = []
    for piece, outcome in zip(job.pieces, outcomes, strict=True):
        if outcome is None:
            cut = _cut(samples, piece.span, rate)
            if cut.size == 0:
                outcome = _Outcome(reason=EMPTY_AUDIO, detail="the time span holds no audio")
            else:
                audio.write(piece.wav, cut, rate)
                outcome = _Outcome(piece.wav, int(cut.size), piece.wav.stat().st_size, _MADE)
        done.append(outcome)
    return done


def _ignore_interrupts() -> None:
    """In a worker: Ctrl-C is the parent's to handle (it cancels what is queued; what runs finishes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def parallel_map(
    function: Callable[[_T], _R], items: Sequence[_T], jobs: int, progress: bool, title: str
) -> list[_R]:
    """``[function(item) for item in items]`` in ``jobs`` processes (0: one per core), with a progress bar."""
    workers = min(jobs or os.cpu_count() or 1, len(items))
    results: list[_R] = []
    with ProgressBar(title, len(items), progress) as bar:
        if workers <= 1:
            for item in items:
                results.append(function(item))
                bar.advance()
            return results
        executor = ProcessPoolExecutor(workers, initializer=_ignore_interrupts)
        try:
            chunk = max(1, min(8, len(items) // (workers * 8)))
            for result in executor.map(function, items, chunksize=chunk):
                results.append(result)
                bar.advance()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    return results


# --------------------------------------------------------------------------------------------------------
# The report


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.1f} s"


@dataclass
class ImportReport:
    """What an import kept (per CSV, and hours of distinct audio) and skipped (by reason, with examples)."""

    name: str
    kept: Counter[str] = field(default_factory=Counter)  # CSV name -> rows
    seconds: dict[Path, float] = field(default_factory=dict)  # kept wav -> duration
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    wavs: Counter[str] = field(default_factory=Counter)  # how each distinct wav came about -> count

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, []).append(where + (f": {detail}" if detail else ""))

    def keep(self, csv: str, wav: Path, seconds: float) -> None:
        self.kept[csv] += 1
        self.seconds[wav] = seconds

    @property
    def hours(self) -> float:
        return sum(self.seconds.values()) / 3600

    def summary(self, examples: int = 3) -> str:
        total = sum(self.kept.values()) + sum(self.skipped.values())
        per_csv = ", ".join(f"{csv} {count}" for csv, count in self.kept.items())
        lines = [
            f"{self.name}: kept {sum(self.kept.values())} of {total} utterances, "
            f"{_duration(self.hours * 3600)} of audio ({per_csv or 'no CSV rows'})",
        ]
        if self.wavs:
            kinds = [kind for kind in (_MADE, _KEPT, _AS_IS) if self.wavs[kind]]
            lines.append("  wavs: " + ", ".join(f"{self.wavs[kind]} {kind}" for kind in kinds))
        lines += manifest.skip_lines(self.skipped, self.examples, examples)
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# The import


def _jobs(utterances: Sequence[Utterance], sample_rate: int) -> tuple[list[_Job], list[tuple[int, int]]]:
    """Conversion jobs (one per source file, each wav once) and, per utterance, its (job, piece) index."""
    sources: dict[Path, int] = {}
    pieces: list[dict[Path, int]] = []
    found: list[list[_Piece]] = []
    index: list[tuple[int, int]] = []
    for utterance in utterances:
        job = sources.setdefault(utterance.source, len(sources))
        if job == len(pieces):
            pieces.append({})
            found.append([])
        piece = pieces[job].setdefault(utterance.wav, len(pieces[job]))
        if piece == len(found[job]):
            found[job].append(_Piece(utterance.wav, utterance.span, utterance.as_is))
        index.append((job, piece))
    jobs = [_Job(source, tuple(found[job]), sample_rate) for source, job in sources.items()]
    return jobs, index


def _remove_stale_temporaries(utterances: Iterable[Utterance]) -> None:
    """Temporary files a killed run left behind (atomic_write's ``.<name>.<random>.tmp``)."""
    for folder in {utterance.wav.parent for utterance in utterances}:
        if folder.is_dir():
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)


def run(
    name: str,
    utterances: Sequence[Utterance],
    target: Path,
    csvs: Sequence[str],
    config: ImportConfig,
    progress: bool = True,
    report: ImportReport | None = None,
) -> list[Path]:
    """Clean, convert, check and write ``utterances`` into ``target``; print the report; the CSV paths.

    Every CSV in ``csvs`` is written (with only its header when nothing is kept for it), in that order.
    ``report`` may already hold what the importer skipped while listing the utterances.
    """
    report = report if report is not None else ImportReport(name)
    label_of = LabelFilter.from_config(config)
    labelled: list[tuple[Utterance, str]] = []
    for utterance in utterances:
        try:
            labelled.append((utterance, label_of(utterance.transcript)))
        except Skip as skip:
            report.skip(skip.reason, utterance.where, skip.detail)
    _remove_stale_temporaries(u for u, _ in labelled)
    jobs, index = _jobs([u for u, _ in labelled], config.sample_rate)
    outcomes = parallel_map(_convert, jobs, config.jobs, progress, f"{name}: converting")
    report.wavs.update(outcome.kind for results in outcomes for outcome in results if outcome.path)
    rows: dict[str, list[manifest.Sample]] = {csv: [] for csv in csvs}
    rate = config.sample_rate
    for (utterance, label), (job, piece) in zip(labelled, index, strict=True):
        outcome = outcomes[job][piece]
        if outcome.path is None:
            report.skip(outcome.reason, utterance.where, outcome.detail)
        elif too_short(outcome.frames, rate, label):
            detail = f"{outcome.frames * 50 // rate} steps of 20 ms for {len(label)} characters"
            report.skip(TOO_SHORT, utterance.where, detail)
        elif config.max_duration and outcome.frames > config.max_duration * rate:
            report.skip(
                TOO_LONG, utterance.where, f"{outcome.frames / rate:.1f} s > {config.max_duration:g} s"
            )
        else:
            rows[utterance.csv].append(manifest.Sample(outcome.path, outcome.size, label))
            report.keep(utterance.csv, outcome.path, outcome.frames / rate)
    paths = []
    for csv in csvs:
        manifest.write_csv(target / csv, rows[csv])
        paths.append(target / csv)
    print(report.summary())
    return paths
