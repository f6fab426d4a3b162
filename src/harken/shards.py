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
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from harken import audio, manifest
from harken.storage import atomic_write


def write(
    csv_files: str | Sequence[str | Path],
    output: Path,
    shard_size: int = 1000,
    log: Callable[[str], None] = print,
) -> Path:
    """Pack the samples of ``csv_files`` into tars in ``output``; return the CSV that lists them."""
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
            infos: dict[str, audio.AudioInfo] = {}
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


def write_index(tar: Path, infos: dict[str, audio.AudioInfo]) -> Path:
    """Write ``<tar>.json``: each member's [offset, size] (+ [sample_rate, channels, frames] for audio)."""
    with tarfile.open(tar, "r:") as archive:
        members = {
            m.name: [m.offset_data, m.size, *_header(infos.get(m.name))]
            for m in archive.getmembers()
            if m.isfile()
        }
    index = {"format": audio.INDEX_FORMAT, "tar_size": tar.stat().st_size, "members": members}
    path = Path(f"{tar}{audio.INDEX_SUFFIX}")
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(index, handle, separators=(",", ":"))
    return path


def _header(info: audio.AudioInfo | None) -> list[int]:
    return [] if info is None else [info.sample_rate, info.channels, info.frames]
