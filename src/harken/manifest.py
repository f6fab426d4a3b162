"""DeepSpeech CSV manifests: ``wav_filename,wav_filesize,transcript``.

Paths are relative to the CSV's folder or absolute; several CSVs are given as one comma-joined string.
``validate`` checks every sample before training and counts what it skips, by reason.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from harken import audio, features, storage
from harken.alphabet import Alphabet
from harken.config import FeatureConfig
from harken.storage import atomic_write

HEADER = ("wav_filename", "wav_filesize", "transcript")


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file (and line)."""


@dataclass(frozen=True)
class Sample:
    path: Path
    size: int
    transcript: str
    duration: float = 0.0  # seconds, filled in by validate()


def split_files(spec: str | Sequence[str | Path]) -> list[Path]:
    """``"a.csv,b.csv"`` (or a list) as paths."""
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    return [Path(item.strip()) for item in items if item.strip()]


def read_csv(path: str | Path) -> list[Sample]:
    """The samples a CSV lists (a local file or a URL: see harken.storage)."""
    url, path = storage.remote_url(path), Path(path)
    shown = url or str(path)  # how messages name it
    try:
        if url is not None:
            data = storage.read_remote(url)
        elif path.is_file():
            data = path.read_bytes()
        else:
            raise ManifestError(f"{path}: no such CSV file")
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    except storage.RemoteError as error:
        raise ManifestError(str(error).replace("no such object", "no such CSV file")) from None
    except UnicodeDecodeError as error:
        raise ManifestError(f"{shown}: not UTF-8 text (byte {error.start})") from None
    except csv.Error as error:
        raise ManifestError(f"{shown}: not a valid CSV file ({error})") from None
    if not rows:
        raise ManifestError(f"{shown}: empty file, expected the header {','.join(HEADER)}")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in ("wav_filename", "transcript") if name not in header]
    if missing:
        raise ManifestError(
            f"{shown}: header {','.join(header)!r} lacks {', '.join(missing)} (expected {','.join(HEADER)})"
        )
    col_file, col_text = header.index("wav_filename"), header.index("transcript")
    col_size = header.index("wav_filesize") if "wav_filesize" in header else None
    base = path.parent
    samples = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ManifestError(f"{shown}:{line}: {len(row)} fields, the header has {len(header)}")
        size = 0
        if col_size is not None and row[col_size].strip():
            try:
                size = int(row[col_size])
            except ValueError:
                raise ManifestError(
                    f"{shown}:{line}: wav_filesize {row[col_size]!r} is not a number"
                ) from None
        wav = Path(row[col_file])  # a URL stays one (storage.remote_url reads it back)
        absolute = wav.is_absolute() or storage.remote_url(wav) is not None
        samples.append(Sample(wav if absolute else base / wav, size, row[col_text]))
    return samples


def read_manifests(spec: str | Sequence[str | Path], limit: int = 0) -> list[Sample]:
    """Samples of every CSV in ``spec`` (comma-joined), in order; at most ``limit`` (0: all)."""
    samples = [sample for path in split_files(spec) for sample in read_csv(path)]
    return samples[:limit] if limit > 0 else samples


def write_csv(path: str | Path, samples: Iterable[Sample], relative: bool = True) -> None:
    """Write a manifest atomically; paths relative to the CSV's folder where they can be.

    A file that already holds exactly this text is left untouched (its modification time too).
    """
    path = Path(path)
    base = Path(os.path.abspath(path.parent))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(HEADER)
    for sample in samples:
        wav = Path(os.path.abspath(sample.path))  # symlinks stay as they are
        if relative and wav.is_relative_to(base):
            wav = wav.relative_to(base)
        size = sample.size or (os.path.getsize(sample.path) if sample.path.is_file() else 0)
        writer.writerow([wav.as_posix(), size, sample.transcript])
    content = text.getvalue()
    if path.is_file() and path.read_text(encoding="utf-8") == content:
        return
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(content)


# Skip reasons, in the order they are checked.
MISSING = "missing file"
UNREADABLE = "unreadable audio"
EMPTY_AUDIO = "no audio samples"
EMPTY_TRANSCRIPT = "empty transcript"
OUT_OF_ALPHABET = "characters outside the alphabet"
TOO_SHORT = "audio too short for its transcript"


@dataclass
class ValidationReport:
    kept: list[Sample] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    details: dict[str, list[str]] = field(default_factory=dict)  # reason -> "file: detail" lines
    resampled: int = 0  # kept samples whose file is at another sample rate (converted when read)
    rejected: list[tuple[Sample, str, str]] = field(default_factory=list)  # (sample, reason, detail)

    def skip(self, reason: str, sample: Sample, detail: str = "") -> None:
        self.skipped[reason] += 1
        self.rejected.append((sample, reason, detail))
        self.details.setdefault(reason, []).append(
            audio.name(sample.path) + (f": {detail}" if detail else "")
        )

    @property
    def hours(self) -> float:
        return sum(s.duration for s in self.kept) / 3600.0

    def summary(self, name: str, examples: int = 3) -> str:
        """A short human report: kept count and hours, then each skip reason with a few examples."""
        lines = [f"{name}: {len(self.kept)} samples ({self.hours:.2f} h) kept"]
        silent = sum(1 for s in self.kept if not s.transcript.strip())
        if silent:
            lines[0] += f", {silent} of them non-speech (empty transcript)"
        if self.resampled:
            lines[0] += f", {self.resampled} at another sample rate (resampled when read)"
        lines += skip_lines(self.skipped, self.details, examples)
        return "\n".join(lines)

    def write_rejected(self, path: Path) -> None:
        """Every skipped sample, as a manifest with two more columns: reason and detail."""
        with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*HEADER, "reason", "detail"])
            for sample, reason, detail in self.rejected:
                shown = storage.remote_url(sample.path) or sample.path.as_posix()
                writer.writerow([shown, sample.size, sample.transcript, reason, detail])


def skip_lines(skipped: Counter[str], details: Mapping[str, Sequence[str]], examples: int) -> list[str]:
    """Report lines: each skip reason with its count and a few examples (shared with the importers)."""
    lines = []
    for reason, count in skipped.most_common():
        lines.append(f"  skipped {count}: {reason}")
        lines.extend(f"    {line}" for line in details[reason][:examples])
        if count > examples:
            lines.append(f"    ... and {count - examples} more")
    return lines


def validate(
    samples: Iterable[Sample], alphabet: Alphabet, config: FeatureConfig, keep_empty: bool = False
) -> ValidationReport:
    """Check each sample's file header and transcript; keep the usable ones (with their duration).
    ``keep_empty``: a sample with an empty transcript is non-speech to train on, not a mistake."""
    report = ValidationReport()
    for sample in samples:
        if not audio.exists(sample.path):
            report.skip(MISSING, sample)
            continue
        try:
            meta = audio.info(sample.path)
        except audio.AudioError as error:
            report.skip(UNREADABLE, sample, str(error).split(": ", 1)[-1])
            continue
        if meta.frames == 0:
            report.skip(EMPTY_AUDIO, sample)
            continue
        if not sample.transcript.strip() and not keep_empty:
            report.skip(EMPTY_TRANSCRIPT, sample)
            continue
        unknown = alphabet.unknown(sample.transcript)
        if unknown:
            report.skip(OUT_OF_ALPHABET, sample, repr("".join(unknown)))
            continue
        labels = alphabet.encode(sample.transcript)
        frames = features.n_frames(int(meta.duration * config.audio_sample_rate), config)
        needed = ctc_min_frames(labels)
        if frames < needed:
            report.skip(TOO_SHORT, sample, f"{frames} frames for {needed} needed")
            continue
        report.resampled += meta.sample_rate != config.audio_sample_rate
        report.kept.append(replace(sample, duration=meta.duration))
    return report


def ctc_min_frames(labels: Sequence[int]) -> int:
    """Fewest output frames CTC needs for ``labels``: one per label plus a blank between repeats."""
    return len(labels) + sum(1 for a, b in zip(labels, labels[1:], strict=False) if a == b)
