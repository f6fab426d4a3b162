"""Sharded tar archives of a corpus (WebDataset's layout: plain tars of ``<key>.<ext>`` files) that train
like any corpus, from the same CSV metadata.

``harken shard --from train.csv --output shards/`` packs the audio of the CSV's samples into
``shards/shard-00000.tar``, ``shard-00001.tar``, ... (``--shard_size`` samples each, in CSV order, with a
``<key>.txt`` transcript beside each recording, so WebDataset tools read them too) and writes
``shards/train.csv`` whose ``wav_filename`` column names the members: ``shard-00000.tar#00000012.wav``.
Beside each tar, ``shard-00000.tar.json`` lists its members' offsets and sizes and each recording's audio
header, so that checking a corpus reads no audio and finding a member takes no scan of the tar.
Copy the folder anywhere (one big file per thousand recordings instead of a million small ones) and train
with ``--train_files shards/train.csv``: a member is read with one seek into its tar (each tar's index is
read once per process), and batches stay duration-sorted as with loose files. The folder may also be in
object storage (``--train_files s3://bucket/shards/train.csv``, see harken.storage): a member is then one
ranged GET.

Both sides live here: packing (``write``, ``write_index``) and finding a member (``split_member``,
``members_of``, ``open_member``), which harken.audio reads through like a file. The packing imports
harken.audio and harken.manifest where it runs, as they read through this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from harken.storage import atomic_write, open_remote, read_remote, remote_exists, remote_size, remote_url

if TYPE_CHECKING:
    from harken.audio import AudioInfo


SEPARATOR = ".tar#"
INDEX_SUFFIX = ".json"  # shard-00000.tar.json: its members' offsets, sizes and audio headers (harken shard)
INDEX_FORMAT = "harken-shard-index/1"


@dataclass(frozen=True)
class Member:
    offset: int
    size: int
    info: AudioInfo | None = None  # the audio header, where the shard's index file records it


INDEXES_KEPT = 2048  # tars whose member lists a process keeps (about 100 kB each per 1,000 members)
_INDEXES: OrderedDict[tuple[str, ...], dict[str, Member] | OSError] = OrderedDict()  # (tar, size, mtime)
# or (url,) -> members, or why a remote tar could not be read


def split_member(path: Path) -> tuple[Path, str] | None:
    """(tar path, member name) of a ``shard.tar#member`` path, or None for an ordinary file."""
    text = str(path)
    at = text.rfind(SEPARATOR)
    if at < 0:
        return None
    return Path(text[: at + len(".tar")]), text[at + len(SEPARATOR) :]


def parse_index(data: bytes, tar_size: int) -> dict[str, Member] | None:
    """The members an index file lists, or None when it is not one or describes another version of the tar."""
    from harken.audio import AudioInfo  # harken.audio reads through this module: imported here

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


def members_of(tar: Path) -> dict[str, Member]:
    """A tar's members: from its index file when it has a current one, else read from the tar's headers.
    The last INDEXES_KEPT tars' are kept (least recently used out)."""
    url = remote_url(tar)
    if url is not None:
        key: tuple[str, ...] = (url,)
        if key not in _INDEXES:
            _INDEXES[key] = _remote_index(url)
    else:
        stat = tar.stat()
        key = (str(tar.resolve()), str(stat.st_size), str(stat.st_mtime_ns))
        if key not in _INDEXES:
            sidecar = Path(f"{tar}{INDEX_SUFFIX}")
            members = parse_index(sidecar.read_bytes(), stat.st_size) if sidecar.is_file() else None
            _INDEXES[key] = members if members is not None else _scan(tar)
    _INDEXES.move_to_end(key)
    while len(_INDEXES) > INDEXES_KEPT:
        _INDEXES.popitem(last=False)
    found = _INDEXES[key]
    if isinstance(found, OSError):
        raise found
    return found


def forget_indexes() -> None:
    """Drop the member lists kept so far (as a fresh process starts without them)."""
    _INDEXES.clear()


def open_member(path: Path) -> io.BytesIO:
    """The bytes of a ``shard.tar#member``; OSError / KeyError when the tar or the member is not there."""
    found = split_member(path)
    assert found is not None
    tar, member = found
    entry = members_of(tar)[member]
    url = remote_url(tar)
    if url is not None:
        return io.BytesIO(read_remote(url, entry.offset, entry.offset + entry.size))  # one ranged read
    with open(tar, "rb") as handle:
        handle.seek(entry.offset)
        return io.BytesIO(handle.read(entry.size))


# --------------------------------------------------------------------------------------------------------
# Packing


def write(
    csv_files: str | Sequence[str | Path],
    output: Path,
    shard_size: int = 1000,
    log: Callable[[str], None] = print,
) -> Path:
    """Pack the samples of ``csv_files`` into tars in ``output``; return the CSV that lists them."""
    from harken import audio, manifest  # they read through this module: imported here, not at the top

    if shard_size < 1:
        raise ValueError(f"--shard_size must be at least 1, got {shard_size}")
    samples = manifest.read_manifests(csv_files)
    if not samples:
        raise ValueError(f"{csv_files}: no samples to shard")
    output.mkdir(parents=True, exist_ok=True)
    rows: list[manifest.Sample] = []
    for first in range(0, len(samples), shard_size):
        name = f"shard-{first // shard_size:05d}.tar"
        with (
            atomic_write(output / name, "wb") as handle,
            tarfile.open(fileobj=handle, mode="w", dereference=True) as tar,
        ):
            infos: dict[str, AudioInfo] = {}
            for number, sample in enumerate(samples[first : first + shard_size], start=first):
                if not sample.path.is_file():
                    raise ValueError(f"{sample.path}: no such file (listed in {csv_files})")
                key = f"{number:08d}"
                member = f"{key}{sample.path.suffix.lower()}"
                tar.add(sample.path, arcname=member, recursive=False)
                with contextlib.suppress(audio.AudioError):  # unreadable: training's check says so
                    infos[member] = audio.info(sample.path)
                text = sample.transcript.encode("utf-8")
                info = tarfile.TarInfo(f"{key}.txt")
                info.size, info.mtime = len(text), int(os.path.getmtime(sample.path))
                tar.addfile(info, io.BytesIO(text))
                size = sample.path.stat().st_size
                rows.append(manifest.Sample(output / f"{name}#{member}", size, sample.transcript))
        write_index(output / name, infos)
        log(f"wrote {output / name}")
    csv = output / (Path(manifest.split_files(csv_files)[0]).stem + ".csv")
    manifest.write_csv(csv, rows)
    log(f"wrote {csv}: {len(rows)} samples in {(len(samples) + shard_size - 1) // shard_size} shards")
    return csv


def write_index(tar: Path, infos: dict[str, AudioInfo]) -> Path:
    """Write ``<tar>.json``: each member's [offset, size] (+ [sample_rate, channels, frames] for audio)."""
    with tarfile.open(tar, "r:") as archive:
        members = {
            m.name: [m.offset_data, m.size, *_header(infos.get(m.name))]
            for m in archive.getmembers()
            if m.isfile()
        }
    index = {"format": INDEX_FORMAT, "tar_size": tar.stat().st_size, "members": members}
    path = Path(f"{tar}{INDEX_SUFFIX}")
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(index, handle, separators=(",", ":"))
    return path


def _header(info: AudioInfo | None) -> list[int]:
    return [] if info is None else [info.sample_rate, info.channels, info.frames]
