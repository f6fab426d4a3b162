"""Files, folders and globs in, transcripts out, through the ``Model`` API (any model harken loads).

Long recordings are split at pauses by a voice-activity detector (WebRTC's, as DeepSpeech's transcribe.py
did) and each stretch of speech is decoded on its own, so the model's memory does not grow with the file.
Results carry segments with start and end times and their words' timings, and are written as plain text,
JSON, SRT or WebVTT subtitles, or TSV.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harken import audio, features
from harken.formats import OUTPUT_FORMATS as OUTPUT_FORMATS  # written out there; kept here for callers
from harken.formats import render as render
from harken.inference import Model, TokenMetadata
from harken.storage import remote_url


class Cancelled(Exception):
    """Raised between two stretches of speech when the caller's ``stop()`` says the result is no longer
    wanted (a service's client went away, the service is shutting down)."""


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the start of the file
    end: float


@dataclass(frozen=True)
class Alternative:
    text: str
    confidence: float


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...]
    confidence: float
    alternatives: tuple[Alternative, ...] = ()  # the next-best candidates (--candidate_transcripts)


@dataclass(frozen=True)
class Transcript:
    path: Path
    text: str = ""
    duration: float = 0.0
    error: str = ""  # one line when the file could not be transcribed
    segments: tuple[Segment, ...] = ()
    warning: str = ""  # one line when only part of the file could be read (truncated, damaged)


def expand(inputs: Iterable[str | Path]) -> list[Path]:
    """Files, folders (their audio files, recursively, sorted) and glob patterns, as a list of paths.

    A folder without audio files or a pattern that matches nothing is kept, so the caller reports it.
    """
    paths: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = audio.audio_files(path)  # as `harken import folder` takes them
        elif not path.exists() and glob.has_magic(text):
            found = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()]
        else:
            found = [path]
        paths.extend(found or [path])  # nothing matched: keep it, so it is reported
    return paths


def speech_segments(
    samples: np.ndarray, rate: int, aggressiveness: int = 3, max_seconds: float = 30.0
) -> list[tuple[int, int]]:
    """Sample ranges [start, end) of speech, split at pauses (30 ms frames, 300 ms of hysteresis, each
    stretch widened by 300 ms on both sides so that soft onsets and endings are kept).

    A stretch longer than ``max_seconds`` is cut there. With aggressiveness -1, or a rate WebRTC's
    detector does not take (8, 16, 32, 48 kHz), the whole file is one segment.
    """
    detector = audio.voice_detector(aggressiveness, rate)
    if detector is None or len(samples) == 0:
        return [(0, len(samples))] if len(samples) else []
    frame = detector.frame  # 30 ms
    voiced = detector.frames(audio.to_pcm16(samples))
    window = 10  # frames: 300 ms
    limit = max(1, int(max_seconds * 1000 / 30) - 2 * window)  # leaves room for the widening
    frames: list[tuple[int, int]] = []
    begin = None
    for index in range(len(voiced)):
        recent = voiced[max(0, index - window + 1) : index + 1]
        if begin is None and sum(recent) > 0.9 * window:
            begin = max(0, index - window + 1)
        elif begin is not None and len(recent) - sum(recent) > 0.9 * window:
            frames.append((begin, index + 1))
            begin = None
        elif begin is not None and index + 1 - begin >= limit:  # a long stretch: cut, and go straight on
            frames.append((begin, index + 1))
            begin = index + 1
    if begin is not None:
        frames.append((begin, len(voiced)))
    segments: list[tuple[int, int]] = []
    for first, last in frames:  # widen by 300 ms each side, merging what then overlaps, never overlapping
        start, end = max(0, (first - window) * frame), min(len(samples), (last + window) * frame)
        if segments and start <= segments[-1][1] and end - segments[-1][0] <= max_seconds * rate:
            segments[-1] = (segments[-1][0], end)
        else:
            segments.append((max(start, segments[-1][1]) if segments else start, end))
    return segments


def words_of(tokens: tuple[TokenMetadata, ...], offset: float, end: float, step: float) -> tuple[Word, ...]:
    """Characters with start times -> words with start and end times in seconds, rounded to 1 ms (a word
    ends one frame step after its last character starts)."""
    words: list[Word] = []
    current: list[TokenMetadata] = []
    for token in [*tokens, TokenMetadata(" ", -1, 0.0)]:
        if token.text != " ":
            current.append(token)
            continue
        if current:
            first, last = offset + current[0].start_time, min(end, offset + current[-1].start_time + step)
            words.append(Word("".join(t.text for t in current), round(first, 3), round(last, 3)))
            current = []
    return tuple(words)


def _decode(
    model: Model,
    samples: np.ndarray,
    begin: int,
    end: int,
    offset: int,
    num_results: int = 1,
    stop: Callable[[], bool] = _never,
) -> Segment | None:
    """The segment samples[begin:end]; times count from ``offset`` samples before ``samples`` starts.
    Raises Cancelled, before decoding, when ``stop()`` is true."""
    if stop():
        raise Cancelled()
    if features.n_frames(end - begin, model.dims.features) == 0:
        return None
    rate, step = model.sample_rate, model.dims.features.feature_win_step / 1000.0
    best, *others = model.stt_with_metadata(samples[begin:end], num_results).transcripts
    text = " ".join(best.text.split())
    if not text:
        return None
    first, last = (offset + begin) / rate, (offset + end) / rate
    return Segment(
        round(first, 3), round(last, 3), text, words_of(best.tokens, first, last, step), best.confidence,
        tuple(Alternative(" ".join(o.text.split()), o.confidence) for o in others),
    )  # fmt: skip


def transcribe_samples(
    model: Model,
    samples: np.ndarray,
    aggressiveness: int = 3,
    split_above: float = 30.0,
    num_results: int = 1,
    stop: Callable[[], bool] = _never,
) -> tuple[Segment, ...]:
    """samples: [n] float at the model's rate -> the transcript of each stretch of speech.

    Audio up to ``split_above`` seconds is decoded in one piece (cutting it could only lose context);
    longer audio is split at pauses by the voice-activity detector.
    """
    rate = model.sample_rate
    long = len(samples) > split_above * rate
    pieces = speech_segments(samples, rate, aggressiveness, split_above) if long else [(0, len(samples))]
    decoded = (_decode(model, samples, begin, end, 0, num_results, stop) for begin, end in pieces)
    return tuple(segment for segment in decoded if segment is not None)


def transcribe_blocks(
    model: Model,
    blocks: Iterable[np.ndarray],
    aggressiveness: int = 3,
    split_above: float = 30.0,
    num_results: int = 1,
    stop: Callable[[], bool] = _never,
) -> Iterator[Segment]:
    """Like transcribe_samples for audio that comes in blocks (a long file read piece by piece): each
    stretch of speech is decoded as soon as the audio after it shows that it has ended, so only the
    current stretch and one block are ever held."""
    rate = model.sample_rate
    pending, offset = np.zeros(0, np.float32), 0  # audio not yet decoded; where it starts in the file
    for block in blocks:
        pending = np.concatenate([pending, block])
        pieces = speech_segments(pending, rate, aggressiveness, split_above)
        for begin, end in pieces[:-1]:  # the last one may go on in the next block
            segment = _decode(model, pending, begin, end, offset, num_results, stop)
            if segment is not None:
                yield segment
        frame = rate * audio.FRAME_MS // 1000  # keep the detector's frame grid where the whole file has it
        keep = pieces[-1][0] if pieces else max(0, len(pending) - rate) // frame * frame  # silence: ~1 s
        pending, offset = pending[keep:], offset + keep
    for begin, end in speech_segments(pending, rate, aggressiveness, split_above):
        segment = _decode(model, pending, begin, end, offset, num_results, stop)
        if segment is not None:
            yield segment


def transcribe_files(
    model: Model,
    paths: Iterable[Path],
    aggressiveness: int = 3,
    split_above: float = 30.0,
    num_results: int = 1,
    stop: Callable[[], bool] = _never,
) -> Iterator[Transcript]:
    """One Transcript per path (any format and rate, converted to the model's); unreadable or too-short
    files give a Transcript with ``error`` set, and the others go on; a truncated or damaged file gives
    the transcript of what could be read, with ``warning`` set. ``aggressiveness`` (0-3) of the
    voice-activity detector that splits files longer than ``split_above`` seconds (read in blocks, so
    memory stays flat); -1 decodes each file in one piece. ``num_results`` > 1 keeps each segment's next-best
    candidates as its ``alternatives``. ``stop()`` is asked before each stretch is decoded: when it is
    true, Cancelled is raised."""
    for path in paths:
        if path.is_dir():
            yield Transcript(path, error=f"{path}: no audio files in this folder")
            continue
        try:
            yield _transcribe_file(model, path, aggressiveness, split_above, num_results, stop)
        except audio.AudioError as error:
            yield Transcript(path, error=str(error))


def _transcribe_file(
    model: Model,
    path: Path,
    aggressiveness: int,
    split_above: float,
    num_results: int,
    stop: Callable[[], bool],
) -> Transcript:
    """transcribe_files for one file; AudioError when it cannot be read at all."""
    rate, cfg = model.sample_rate, model.dims.features
    warnings: list[str] = []  # what audio.read / audio.blocks found missing: one line at most
    meta = audio.info(path)
    if meta.duration > split_above and aggressiveness >= 0:
        held = [0]  # samples the blocks gave: less than the header's when the file is cut short

        def counted() -> Iterator[np.ndarray]:
            for block in audio.blocks(path, rate, warn=warnings.append):  # [n] each
                held[0] += len(block)
                yield block

        segments = tuple(transcribe_blocks(model, counted(), aggressiveness, split_above, num_results, stop))
        duration = held[0] / rate if warnings else meta.duration
    else:
        samples = audio.read(path, rate, warn=warnings.append)  # [n]
        if features.n_frames(len(samples), cfg) == 0:
            short = f"{path}: shorter than one {cfg.feature_win_len} ms feature window"
            return Transcript(path, error=warnings[0] if warnings else short)
        segments = transcribe_samples(model, samples, aggressiveness, split_above, num_results, stop)
        duration = len(samples) / rate
    text = " ".join(s.text for s in segments)
    return Transcript(path, text, duration, segments=segments, warning=warnings[0] if warnings else "")


def unique(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """The paths with repeats of one input dropped (the first kept; ``x.wav``, ``./x.wav`` and
    ``a/../x.wav`` are one), and the repeats, so that no input is transcribed or written twice."""
    kept: list[Path] = []
    repeats: list[Path] = []
    seen: set[str] = set()
    for path in paths:
        key = remote_url(path) or os.path.abspath(path)
        (repeats if key in seen else kept).append(path)
        seen.add(key)
    return kept, repeats


def output_names(paths: Sequence[Path], output_format: str, folder: Path = Path()) -> dict[Path, Path]:
    """Where each input's result goes inside an output ``folder``, never two to one place:
    ``<stem>.<format>`` under the folders that set it apart from the other inputs (rec/a/x.wav,
    rec/b/x.wav: a/x.txt, b/x.txt), the full name where that would meet another's (x.wav, x.ogg:
    x.wav.txt, x.ogg.txt). Paths of one file written two ways are for ``unique`` to drop first.

    ValueError, naming both, when two would still meet: names that differ only in case, which are one
    file on case-insensitive file systems.
    """
    folders = {path: os.path.abspath(path.parent) for path in paths}
    common = os.path.commonpath(list(set(folders.values()))) if folders else ""
    full: set[Path] = set()  # inputs named with their suffix

    def name(path: Path) -> Path:
        written = path.name if path in full else path.stem
        return folder / os.path.relpath(folders[path], common) / f"{written}.{output_format}"

    while True:  # each round names at least one more input in full, so it ends
        names = {path: name(path) for path in paths}
        meeting: dict[str, list[Path]] = {}
        for path, target in names.items():
            meeting.setdefault(str(target).casefold(), []).append(path)
        clashes = [group for group in meeting.values() if len(group) > 1]
        if not any(set(group) - full for group in clashes):
            break
        full.update(path for group in clashes for path in group)
    if clashes:
        first, second = clashes[0][:2]
        raise ValueError(
            f"{first} and {second} would both be written to {names[first]} (names that differ only in "
            "case are one file on some file systems): rename one"
        )
    return names


def check_output_folder(folder: Path, targets: Sequence[Path]) -> None:
    """ValueError, one line, when --output_dir or a folder inside it that a transcript goes in is a file,
    or a transcript's path is a folder: refused before anything is written."""
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                raise ValueError(f"{place}: a file, not a folder (--output_dir {folder})")
            break
    for target in targets:
        if target.is_dir():
            raise ValueError(f"{target}: a folder, where the transcript of an input is to be written")
        for place in target.parents:
            if place == folder:
                break
            if place.exists() and not place.is_dir():
                raise ValueError(f"{place}: a file, not a folder (for {target})")
