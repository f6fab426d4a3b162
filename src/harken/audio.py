"""Audio in: any format libsndfile reads, mixed down to mono float32 at the model's sample rate."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile
from scipy.signal import resample_poly

from harken.storage import RemoteError, open_remote, read_remote, remote_exists, remote_size, remote_url


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


SEPARATOR = ".tar#"
INDEX_SUFFIX = ".json"  # shard-00000.tar.json: its members' offsets, sizes and audio headers (harken shard)
INDEX_FORMAT = "harken-shard-index/1"


@dataclass(frozen=True)
class Member:
    offset: int
    size: int
    info: AudioInfo | None = None  # the audio header, where the shard's index file records it


INDEXES_KEPT = 2048  # tars whose member lists a process keeps (about 100 kB each per 1,000 members)
_INDEX: OrderedDict[tuple[str, ...], dict[str, Member] | OSError] = OrderedDict()  # (tar, size, mtime)
# or (url,) -> members, or why a remote tar could not be read


def split_member(path: Path) -> tuple[Path, str] | None:
    """(tar path, member name) of a ``shard.tar#member`` path, or None for an ordinary file."""
    text = str(path)
    at = text.rfind(SEPARATOR)
    if at < 0:
        return None
    return Path(text[: at + len(".tar")]), text[at + len(SEPARATOR) :]


def name(path: str | Path) -> str:
    """How messages name ``path``: its URL when it is one."""
    return remote_url(path) or str(path)


def parse_index(data: bytes, tar_size: int) -> dict[str, Member] | None:
    """The members an index file lists, or None when it is not one or describes another version of the tar."""
    try:
        index = json.loads(data)
        if index.get("format") != INDEX_FORMAT or index.get("tar_size") != tar_size:
            return None
        members = {}
        for member, entry in index["members"].items():
            if len(entry) not in (2, 5) or not all(type(value) is int and value >= 0 for value in entry):
                return None
            members[member] = Member(entry[0], entry[1], AudioInfo(*entry[2:5]) if len(entry) == 5 else None)
        return members
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def _scan(source: Path | IO[bytes]) -> dict[str, Member]:
    """Members from the tar's own headers (for a remote tar, a ranged read per header)."""
    arguments: dict[str, Any] = {"name": source} if isinstance(source, Path) else {"fileobj": source}
    with tarfile.open(mode="r:", **arguments) as archive:
        return {m.name: Member(m.offset_data, m.size) for m in archive.getmembers() if m.isfile()}


def _remote_index(url: str) -> dict[str, Member] | OSError:
    """A remote tar's members, or the error that kept them from being read (kept: not asked again)."""
    try:
        if not remote_exists(url):
            return {}  # its members are missing, like those of a tar that lacks them
        size = remote_size(url)
        has_index = remote_exists(url + INDEX_SUFFIX)
        members = parse_index(read_remote(url + INDEX_SUFFIX), size) if has_index else None
        if members is None:
            with open_remote(url, unbuffered=True) as handle:  # no index file: one read per header
                members = _scan(handle)
        return members
    except (OSError, tarfile.TarError) as error:
        return error if isinstance(error, OSError) else OSError(f"{url}: not a tar ({error})")


def _index(tar: Path) -> dict[str, Member]:
    """A tar's members: from its index file when it has a current one, else read from the tar's headers.
    The last INDEXES_KEPT tars' are kept (least recently used out)."""
    url = remote_url(tar)
    if url is not None:
        key: tuple[str, ...] = (url,)
        if key not in _INDEX:
            _INDEX[key] = _remote_index(url)
    else:
        stat = tar.stat()
        key = (str(tar.resolve()), str(stat.st_size), str(stat.st_mtime_ns))
        if key not in _INDEX:
            sidecar = Path(f"{tar}{INDEX_SUFFIX}")
            members = parse_index(sidecar.read_bytes(), stat.st_size) if sidecar.is_file() else None
            _INDEX[key] = members if members is not None else _scan(tar)
    _INDEX.move_to_end(key)
    while len(_INDEX) > INDEXES_KEPT:
        _INDEX.popitem(last=False)
    found = _INDEX[key]
    if isinstance(found, OSError):
        raise found
    return found


def exists(path: Path) -> bool:
    """Whether ``path`` is a file or an object, or a member of a tar (``shard.tar#member``: harken.shards)."""
    found = split_member(path)
    if found is None:
        url = remote_url(path)
        return remote_exists(url) if url is not None else path.is_file()
    tar, member = found
    try:
        return member in _index(tar)
    except RemoteError:
        raise  # the storage could not be asked: not the same as missing
    except (OSError, tarfile.TarError):
        return False


def fingerprint(path: Path) -> str | None:
    """What identifies the audio at ``path`` for a cache (location, size, modification time of local files;
    objects in storage are taken as immutable), or None when it cannot be found."""
    try:
        found = split_member(path)
        if found is not None:
            tar, member = found
            entry = _index(tar)[member]
            return f"{fingerprint(tar)}#{member}|{entry.offset}|{entry.size}"
        url = remote_url(path)
        if url is not None and not url.startswith("file://"):
            return url
        local = Path(url[len("file://") :]) if url is not None else path
        stat = os.stat(local)
        return f"{os.path.abspath(local)}|{stat.st_size}|{stat.st_mtime_ns}"
    except (OSError, KeyError, tarfile.TarError):
        return None


def open_member(path: Path) -> io.BytesIO:
    """The bytes of a ``shard.tar#member``; OSError / KeyError when the tar or the member is not there."""
    found = split_member(path)
    assert found is not None
    tar, member = found
    entry = _index(tar)[member]
    url = remote_url(tar)
    if url is not None:
        return io.BytesIO(read_remote(url, entry.offset, entry.offset + entry.size))  # one ranged read
    with open(tar, "rb") as handle:
        handle.seek(entry.offset)
        return io.BytesIO(handle.read(entry.size))


def _open(path: Path) -> soundfile.SoundFile:
    """The file opened for reading; AudioError (one line, naming it) when it is missing or not audio.
    ``shard.tar#member`` names a recording inside a tar (harken shard); a URL, an object in storage."""
    source: Any = str(path)
    url = remote_url(path)
    if split_member(path) is not None:
        try:
            source = open_member(path)
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
    found = split_member(path)
    if found is not None:
        try:
            recorded = _index(found[0]).get(found[1])
        except (OSError, tarfile.TarError):
            recorded = None
        if recorded is not None and recorded.info is not None:
            return recorded.info  # from the shard's index file: nothing to read
    with _open(path) as handle:
        return AudioInfo(int(handle.samplerate), int(handle.channels), int(handle.frames))


def read(path: str | Path, sample_rate: int) -> np.ndarray:
    """Samples of ``path`` as mono float32 in [-1, 1] at ``sample_rate``.  # [n_samples]

    Several channels are averaged; another rate is converted with a polyphase resampler. Integer PCM is
    scaled as DeepSpeech did (int16 / 32768), so features match DeepSpeech models exactly.
    """
    path = Path(path)
    with _open(path) as handle:
        rate = int(handle.samplerate)
        data = _read_all(handle, path)  # [n, channels]
    if data.shape[0] == 0:
        raise AudioError(f"{name(path)}: the file holds no audio samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, int(rate), sample_rate)


def blocks(path: str | Path, sample_rate: int, seconds: float = 30.0) -> Iterator[np.ndarray]:
    """The samples of ``path`` as ``read`` gives them, in consecutive blocks of about ``seconds``.

    Memory stays at a few blocks however long the file is. Each block is resampled with a margin of the
    neighbouring audio on both sides, then trimmed, so the joined blocks equal one whole-file conversion
    (to float rounding): block edges fall where input and output samples line up exactly.
    """
    path = Path(path)
    with _open(path) as handle:
        rate_in = int(handle.samplerate)
        ratio = Fraction(sample_rate, rate_in)
        unit = ratio.denominator  # input samples per whole number of output samples
        size = max(unit, int(seconds * rate_in) // unit * unit)
        margin = 0 if ratio == 1 else -(-2048 // unit) * unit
        total = handle.frames
        for start in range(0, total, size):
            first = max(0, start - margin)
            handle.seek(first)
            data = _read_all(handle, path, min(total, start + size + margin) - first)
            mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
            converted = resample(mono, rate_in, sample_rate)
            skip = (start - first) * ratio.numerator // unit
            keep = -(-min(size, total - start) * ratio.numerator // unit)
            yield converted[skip : skip + keep]


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Convert mono float samples from ``rate_in`` to ``rate_out`` (exact rational polyphase filter)."""
    if rate_in == rate_out:
        return np.ascontiguousarray(samples, dtype=np.float32)
    ratio = Fraction(rate_out, rate_in)
    out = resample_poly(samples.astype(np.float64), ratio.numerator, ratio.denominator)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def from_pcm16(pcm: bytes | np.ndarray) -> np.ndarray:
    """16-bit little-endian PCM (bytes or an int16 array) as float32 in [-1, 1]."""
    array = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray) else np.asarray(pcm)
    return array.astype(np.float32) / 32768.0


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16 (clipped)."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def write(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono samples as 16-bit PCM WAV."""
    soundfile.write(str(path), samples, sample_rate, subtype="PCM_16")


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text
