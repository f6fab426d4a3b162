"""Audio files: any format libsndfile reads, mixed down to mono float32 at the model's sample rate (read
whole, in blocks, or as far as a damaged file goes), their headers (``info``), and the one writer of audio
files (16-bit PCM WAV, atomically).

A path is a local file, a URL or object in storage (harken.storage), or a recording inside a tar shard
(``shard.tar#member``): harken.shards finds the member, and this module reads it like any file.
"""

from __future__ import annotations

import os
import struct
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile

from harken import shards
from harken.audio.pcm import to_pcm16
from harken.audio.resampler import resample
from harken.storage import RemoteError, atomic_write, open_remote, remote_exists, remote_url


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file and says why in one line."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def name(path: str | Path) -> str:
    """How messages name ``path``: its URL when it is one."""
    return remote_url(path) or str(path)


def exists(path: Path) -> bool:
    """Whether ``path`` is a file or an object, or a member of a tar (``shard.tar#member``: harken.shards)."""
    found = shards.split_member(path)
    if found is None:
        url = remote_url(path)
        return remote_exists(url) if url is not None else path.is_file()
    tar, member = found
    try:
        return member in shards.members_of(tar)
    except RemoteError:
        raise  # the storage could not be asked: not the same as missing
    except (OSError, tarfile.TarError):
        return False


def fingerprint(path: Path) -> str | None:
    """What identifies the audio at ``path`` for a cache (location, size, modification time of local files;
    objects in storage are taken as immutable), or None when it cannot be found."""
    try:
        found = shards.split_member(path)
        if found is not None:
            tar, member = found
            entry = shards.members_of(tar)[member]
            return f"{fingerprint(tar)}#{member}|{entry.offset}|{entry.size}"
        url = remote_url(path)
        if url is not None and not url.startswith("file://"):
            return url
        local = Path(url[len("file://") :]) if url is not None else path
        stat = os.stat(local)
        return f"{os.path.abspath(local)}|{stat.st_size}|{stat.st_mtime_ns}"
    except (OSError, KeyError, tarfile.TarError):
        return None


def _open(path: Path) -> soundfile.SoundFile:
    """The file opened for reading; AudioError (one line, naming it) when it is missing or not audio.
    ``shard.tar#member`` names a recording inside a tar (harken shard); a URL, an object in storage."""
    source: Any = str(path)
    url = remote_url(path)
    if shards.split_member(path) is not None:
        try:
            source = shards.open_member(path)
        except RemoteError as error:
            raise AudioError(str(error)) from None
        except (OSError, KeyError, tarfile.TarError):
            raise AudioError(f"{name(path)}: no such file in the tar") from None
    elif url is not None:
        try:
            source = open_remote(url)  # a header read fetches a block, not the whole object
        except RemoteError as error:
            raise AudioError(str(error)) from None
    elif not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        return soundfile.SoundFile(source)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{name(path)}: not a readable audio file ({_reason(error)})") from None


def _read_all(handle: soundfile.SoundFile, path: Path, frames: int = -1) -> np.ndarray:
    """[frames, channels] float32 from the current position; AudioError when the data is damaged."""
    try:
        return handle.read(frames, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        where = f" at {handle.tell() / handle.samplerate:.1f} s" if handle.samplerate else ""
        raise AudioError(f"{name(path)}: unreadable{where} ({_reason(error)})") from None


def info(path: str | Path) -> AudioInfo:
    """Sample rate, channels and length of an audio file, from its header."""
    path = Path(path)
    found = shards.split_member(path)
    if found is not None:
        try:
            recorded = shards.members_of(found[0]).get(found[1])
        except (OSError, tarfile.TarError):
            recorded = None
        if recorded is not None and recorded.info is not None:
            return recorded.info  # from the shard's index file: nothing to read
    with _open(path) as handle:
        return AudioInfo(int(handle.samplerate), int(handle.channels), int(handle.frames))


def read(path: str | Path, sample_rate: int, warn: Callable[[str], None] | None = None) -> np.ndarray:
    """Samples of ``path`` as mono float32 in [-1, 1] at ``sample_rate``.  # [n_samples]

    Several channels are averaged; another rate is converted with a polyphase resampler. Integer PCM is
    scaled as DeepSpeech did (int16 / 32768), so features match DeepSpeech models exactly.

    With ``warn``, a truncated or damaged file gives what could be read, and ``warn`` gets one line naming
    the file and saying what is missing (see ``_damage``); without it, damage is an AudioError.
    """
    path = Path(path)
    problem = ""
    with _open(path) as handle:
        rate = int(handle.samplerate)
        if warn is None:
            data = _read_all(handle, path)  # [n, channels]
        else:
            data, reason = _read_tolerant(handle, handle.frames)  # [n, channels]
            problem = _damage(path, handle, data.shape[0], reason)
    if data.shape[0] == 0:
        raise AudioError(problem or f"{name(path)}: the file holds no audio samples")
    if problem and warn is not None:
        warn(problem)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, int(rate), sample_rate)


def blocks(
    path: str | Path, sample_rate: int, seconds: float = 30.0, warn: Callable[[str], None] | None = None
) -> Iterator[np.ndarray]:
    """The samples of ``path`` as ``read`` gives them, in consecutive blocks of about ``seconds``.

    Memory stays at a few blocks however long the file is. Each block is resampled with a margin of the
    neighbouring audio on both sides, then trimmed, so the joined blocks equal one whole-file conversion
    (to float rounding): block edges fall where input and output samples line up exactly. ``warn`` as for
    ``read``: the blocks stop where the readable audio does, and ``warn`` is called once at the end.
    """
    path = Path(path)
    with _open(path) as handle:
        rate_in = int(handle.samplerate)
        ratio = Fraction(sample_rate, rate_in)
        unit = ratio.denominator  # input samples per whole number of output samples
        size = max(unit, int(seconds * rate_in) // unit * unit)
        margin = 0 if ratio == 1 else -(-2048 // unit) * unit
        total = decoded = handle.frames
        reason = ""
        for start in range(0, total, size):
            first = max(0, start - margin)
            handle.seek(first)
            wanted = min(total, start + size + margin) - first
            if warn is None:
                data = _read_all(handle, path, wanted)  # [wanted, channels]
            else:
                data, reason = _read_tolerant(handle, wanted)  # [<= wanted, channels]
            mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
            converted = resample(mono, rate_in, sample_rate)
            skip = (start - first) * ratio.numerator // unit
            keep = -(-min(size, total - start) * ratio.numerator // unit)
            if len(converted) > skip:
                yield converted[skip : skip + keep]
            if data.shape[0] < wanted:  # the audio stops here (truncated, or damaged from here on)
                decoded = first + data.shape[0]
                break
        problem = _damage(path, handle, decoded, reason) if warn is not None else ""
    if problem and warn is not None:
        warn(problem)


def write(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Mono float samples in [-1, 1] as a 16-bit PCM WAV file (scaled as ``read`` scales them back:
    ``to_pcm16``), written atomically: to a temporary name renamed into place, so a file that exists is
    whole. Every audio file harken writes is written here."""
    with atomic_write(Path(path), "wb") as handle:
        soundfile.write(handle, to_pcm16(samples), sample_rate, subtype="PCM_16", format="WAV")


def wav_frames(path: Path, sample_rate: int) -> int:
    """Frames of a file as ``write`` writes them (a mono 16-bit PCM WAV) at ``sample_rate``; 0 when
    ``path`` is anything else or absent."""
    try:
        meta = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError):
        return 0
    usable = (meta.format, meta.subtype, meta.channels, meta.samplerate) == ("WAV", "PCM_16", 1, sample_rate)
    return int(meta.frames) if usable else 0


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text


TOLERANT_READ = 4096  # frames: what damage may cost of the audio before it


def _read_tolerant(handle: soundfile.SoundFile, frames: int) -> tuple[np.ndarray, str]:
    """[<= frames, channels] float32 from the current position, read in pieces of TOLERANT_READ frames (a
    FLAC frame's worth) so that what comes before damage is kept, and libsndfile's complaint where it
    stopped at damage ('' otherwise): a read that fails gives nothing, so each loses at most one piece."""
    pieces = [np.zeros((0, handle.channels), np.float32)]
    left = frames
    while left > 0:
        try:
            piece = handle.read(min(TOLERANT_READ, left), dtype="float32", always_2d=True)  # [<= 4096, ch]
        except (RuntimeError, soundfile.LibsndfileError) as error:
            reason = _reason(error)  # at damage, the seek soundfile makes after each read may be what fails
            return np.concatenate(pieces), "truncated or damaged" if "fseek" in reason else reason
        if piece.shape[0] == 0:
            break
        pieces.append(piece)
        left -= piece.shape[0]
    return np.concatenate(pieces), ""


def _damage(path: Path, handle: soundfile.SoundFile, decoded: int, reason: str) -> str:
    """One line naming ``path`` when less audio could be decoded than its header announces (WAV, W64,
    AIFF and AU headers are read here, as libsndfile quietly shortens their length to the bytes present;
    other formats' length is libsndfile's), when decoding stopped at damage (``reason``), or when
    libsndfile's log says the file ended early or is corrupt; '' for a whole file."""
    rate = handle.samplerate or 1
    lengths = _header_seconds(path)  # (seconds announced, seconds the bytes present hold)
    announced = f"{lengths[0] if lengths else handle.frames / rate:.2f} s"
    held = f"{decoded / rate:.2f} s"
    if reason:
        return f"{name(path)}: unreadable after {held} of the {announced} its header announces ({reason})"
    if (lengths is not None and lengths[1] < lengths[0]) or decoded < handle.frames:
        return f"{name(path)}: truncated: the header announces {announced}, the file holds {held}"
    complaints = [line.strip() for line in handle.extra_info.splitlines()
                  if "unexpected" in line.lower() or "corrupt" in line.lower()]  # fmt: skip
    return f"{name(path)}: truncated or damaged ({complaints[0]})" if complaints else ""


AU_SAMPLE_BYTES = {1: 1, 2: 1, 3: 2, 4: 3, 5: 4, 6: 4, 7: 8, 27: 1}  # AU encoding -> bytes a sample
OPEN_LENGTH = 0xFFFFFFFF - 8  # a 32-bit length this large (or 0) is a stream's: "until the end"


def _raw(path: Path) -> IO[bytes]:
    """The file's bytes: a local file, a tar member or an object in storage."""
    if shards.split_member(path) is not None:
        return shards.open_member(path)
    url = remote_url(path)
    return open_remote(url, unbuffered=True) if url is not None else open(path, "rb")  # noqa: SIM115


def _header_seconds(path: Path) -> tuple[float, float] | None:
    """(seconds of audio the header announces, seconds the data bytes present hold) of a WAV (RIFF,
    RIFX), W64, AIFF/AIFC or AU file; None for other formats, a header that leaves the length open (as a
    stream's does), or a file that cannot be read again."""
    try:
        with _raw(path) as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(0)
            head = handle.read(40)
            if head[:4] != b".snd" or len(head) < 24:
                return _chunked_seconds(handle, head, size)
            offset, length, encoding, rate, channels = struct.unpack(">5I", head[4:24])  # AU
            second = rate * channels * AU_SAMPLE_BYTES.get(encoding, 0)
            if not 0 < length < OPEN_LENGTH or second == 0:
                return None
            return length / second, min(length, max(0, size - offset)) / second
    except (OSError, KeyError, tarfile.TarError, struct.error, OverflowError, ValueError, ZeroDivisionError):
        return None


def _chunked_seconds(handle: IO[bytes], head: bytes, size: int) -> tuple[float, float] | None:
    """``_header_seconds`` of the chunked formats: RIFF/RIFX and AIFF (4-byte ids, 32-bit sizes padded to
    2 bytes) and W64 (16-byte ids, 64-bit sizes that count the chunk's 24-byte header, padded to 8)."""
    wide = head[:4] == b"riff" and head[24:28] == b"wave"
    if wide or (head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE"):
        endian, data = ("<" if head[:4] != b"RIFX" else ">"), b"data"
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        endian, data = ">", b"SSND"
    else:
        return None
    at, header, pad = (40, 24, 8) if wide else (12, 8, 2)
    second, comm = 0.0, (0, 0.0)  # WAV: bytes a second (its fmt chunk); AIFF: (frames, rate) of COMM
    while at + header <= size:
        handle.seek(at)
        raw = handle.read(header)
        length = struct.unpack("<Q", raw[16:24])[0] - 24 if wide else struct.unpack(endian + "I", raw[4:8])[0]
        if length < 0:
            return None
        body = handle.read(min(length, 18))
        if raw[:4] == b"fmt " and len(body) >= 12:
            second = float(struct.unpack(endian + "I", body[8:12])[0])
        elif raw[:4] == b"COMM" and len(body) >= 18:  # channels, frames, bits, rate (80-bit float)
            _, frames, _, exponent, mantissa = struct.unpack(">hIhHQ", body[:18])
            comm = (frames, mantissa * 2.0 ** ((exponent & 0x7FFF) - 16383 - 63))
        elif raw[:4] == data:
            start = at + header + (8 + struct.unpack(">I", body[:4])[0] if data == b"SSND" else 0)
            length -= start - at - header
            if data == b"SSND" and comm[0]:
                second = length * comm[1] / comm[0]  # the data's bytes over the frames COMM announces
            if not 0 < length < OPEN_LENGTH or second <= 0:
                return None
            return length / second, min(length, max(0, size - start)) / second
        at += header + length + (-length % pad)
    return None
