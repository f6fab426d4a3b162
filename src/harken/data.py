"""Samples -> padded batches of MFCC frames and labels, in duration-sorted order.

With several processes (torchrun) every batch is a *global* batch: each process reads its own contiguous
slice of it (``distributed.shard``), so every process takes the same number of steps, the samples of a
step still have similar durations, and the batch order stays a function of (seed, epoch) alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from harken import audio, augment, features, manifest
from harken.alphabet import Alphabet
from harken.cache import FeatureCache
from harken.config import DataConfig, FeatureConfig
from harken.distributed import shard
from harken.manifest import Sample


@dataclass
class Item:
    index: int
    features: torch.Tensor  # [time, n_mfcc]; with --device_features the audio samples [n_samples]
    labels: torch.Tensor  # [n_labels] int64
    audio: FeatureConfig | None = None  # set when ``features`` holds samples: the features to make of them


@dataclass
class Batch:
    features: torch.Tensor  # [batch, time, n_mfcc], zero-padded; audio: [batch, n_samples], zero-padded
    lengths: torch.Tensor  # [batch] frames
    labels: torch.Tensor  # [batch, max_labels], zero-padded
    label_lengths: torch.Tensor  # [batch]
    indices: list[int]  # sample indices into the dataset
    failed: list[tuple[int, str]]  # (index, one-line reason) of unusable samples (unreadable, silent)
    audio: FeatureConfig | None = None  # set when ``features`` holds samples: ``frames`` computes them

    def frames(self) -> torch.Tensor:
        """The MFCC frames [batch, time, n_mfcc], computed on the batch's device when it holds audio: each
        row's frames are its own utterance's, then zeros (as collated frames are padded: they are the right
        context of a row's last frames)."""
        if self.audio is None:
            return self.features
        audio = self.features if self.features.device.type != "mps" else self.features.cpu()  # no float64
        frames = features.mfcc(audio, self.audio)[:, : int(self.lengths.max())]  # [batch, time, n_mfcc]
        frames = frames.to(self.features.device)
        valid = torch.arange(frames.shape[1], device=frames.device) < self.lengths.to(frames.device)[:, None]
        return frames * valid.unsqueeze(-1)

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.features.to(device, non_blocking=True),
            self.lengths,
            self.labels.to(device, non_blocking=True),
            self.label_lengths,
            self.indices,
            self.failed,
            self.audio,
        )

    def split(self, pieces: int) -> list[Batch]:
        """This batch as up to ``pieces`` smaller ones, each padded only to its own longest sample (the
        unreadable samples travel with the first)."""
        if pieces <= 1 or len(self) <= 1:
            return [self]
        size = math.ceil(len(self) / pieces)
        parts = []
        for start in range(0, len(self), size):
            rows = slice(start, start + size)
            lengths, label_lengths = self.lengths[rows], self.label_lengths[rows]
            parts.append(
                Batch(
                    self.features[rows]
                    if self.audio is not None
                    else self.features[rows, : int(lengths.max())],
                    lengths,
                    self.labels[rows, : int(label_lengths.max())],
                    label_lengths,
                    self.indices[rows],
                    self.failed if start == 0 else [],
                    self.audio,
                )
            )
        return parts


Key = int | tuple[int, int, float]  # a sample index, or (index, epoch, training clock) to augment it


class SpeechDataset(Dataset[Item | tuple[int, str]]):
    """Reads each sample's audio and computes its MFCC frames (in the loader's worker processes).

    With an ``augmenter`` (the training set), a key (index, epoch, clock) gets that sample augmented with
    a generator seeded from (seed, epoch, index): the same in any worker, on any resume."""

    def __init__(
        self,
        samples: Sequence[Sample],
        alphabet: Alphabet,
        config: FeatureConfig,
        augmenter: augment.Augmenter | None = None,
        seed: int = 0,
        cache: FeatureCache | None = None,
        audio_only: bool = False,
    ) -> None:
        """``audio_only`` (--device_features): items hold the (augmented) samples; the training step
        computes their features."""
        self.samples = list(samples)
        self.alphabet = alphabet
        self.config = config
        self.augmenter, self.seed = augmenter, seed
        self.cache = cache
        self.audio_only = audio_only

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Key) -> Item | tuple[int, str]:
        index, epoch, clock = key if isinstance(key, tuple) else (key, -1, 0.0)
        sample = self.samples[index]
        augmenting = self.augmenter is not None and epoch >= 0
        ids = self.alphabet.encode(sample.transcript)
        if self.cache is not None and not augmenting:
            cached = self.cache.load(sample.path)
            if cached is not None:
                return Item(index, cached, torch.tensor(ids, dtype=torch.int64))
        try:
            waveform = audio.read(sample.path, self.config.audio_sample_rate)
        except audio.AudioError as error:
            return index, str(error)
        if not waveform.any() and ids:  # silence is what a non-speech sample (no labels) may be
            return index, f"{sample.path}: silent (every sample is zero)"
        labels = torch.tensor(ids, dtype=torch.int64)
        if self.audio_only:
            if augmenting:
                assert self.augmenter is not None
                rng = augment.sample_rng(self.seed, epoch, index)
                waveform = self.augmenter.signal(
                    waveform, clock, rng, min_frames=manifest.ctc_min_frames(ids)
                )
            return Item(index, torch.from_numpy(waveform), labels, self.config)  # [n_samples]
        if augmenting:
            assert self.augmenter is not None
            rng = augment.sample_rng(self.seed, epoch, index)
            mfcc = self.augmenter.apply(waveform, clock, rng, min_frames=manifest.ctc_min_frames(ids))
        else:
            mfcc = features.mfcc(torch.from_numpy(waveform), self.config)  # [time, n_mfcc]
            if self.cache is not None:
                self.cache.store(sample.path, mfcc)
        return Item(index, mfcc, labels)


def collate(items: Sequence[Item | tuple[int, str]]) -> Batch:
    """Items -> one zero-padded Batch of frames, or of audio samples (--device_features)."""
    good = [item for item in items if isinstance(item, Item)]
    failed = [item for item in items if not isinstance(item, Item)]
    audio = good[0].audio if good else None
    time = max((item.features.shape[0] for item in good), default=0)
    width = max([1, *(item.labels.shape[0] for item in good)])  # >= 1: a batch of non-speech has no labels
    feats = torch.zeros(len(good), time, *good[0].features.shape[1:]) if good else torch.zeros(0, 0, 0)
    labels = torch.zeros(len(good), width, dtype=torch.int64)
    for row, item in enumerate(good):
        feats[row, : item.features.shape[0]] = item.features
        labels[row, : item.labels.shape[0]] = item.labels
    frames = [int(features.n_frames(item.features.shape[0], audio)) if audio else item.features.shape[0]
              for item in good]  # fmt: skip
    return Batch(
        features=feats,  # [batch, time, n_mfcc] or [batch, n_samples]
        lengths=torch.tensor(frames, dtype=torch.int64),
        labels=labels,
        label_lengths=torch.tensor([item.labels.shape[0] for item in good], dtype=torch.int64),
        indices=[item.index for item in good],
        failed=failed,
        audio=audio,
    )


def sorted_batches(samples: Sequence[Sample], batch_size: int, reverse: bool = False) -> list[list[int]]:
    """Sample indices grouped into batches of similar duration, shortest first (longest with ``reverse``)."""
    order = sorted(range(len(samples)), key=lambda i: (samples[i].duration, samples[i].size), reverse=reverse)
    size = max(1, batch_size)
    return [order[start : start + size] for start in range(0, len(order), size)]


class BatchOrder(Sampler[list[Any]]):
    """The batches of one epoch, from batch ``start`` on; shuffled deterministically by (seed, epoch).

    With ``world`` processes, process ``rank`` gets its slice of every batch (possibly empty when a batch
    has fewer samples than there are processes). ``set_epoch`` moves a loader that keeps its worker
    processes (``persistent``) on to another epoch.
    """

    def __init__(
        self,
        batches: list[list[int]],
        epoch: int,
        seed: int,
        shuffle: bool = False,
        start: int = 0,
        *,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.batches, self.seed, self.shuffle = batches, seed, shuffle
        self.rank, self.world = rank, world
        self.epochs = 0  # > 0: yield (index, epoch, training clock) keys, so the dataset augments
        self.set_epoch(epoch, start)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        self.order = list(range(len(self.batches)))
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self.order = torch.randperm(len(self.batches), generator=generator).tolist()

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.start)

    def __iter__(self) -> Iterator[list[Any]]:
        for step, position in enumerate(self.order[self.start :], start=self.start):
            indices = shard(self.batches[position], self.rank, self.world)
            if self.epochs:
                clock = augment.training_clock(self.epoch, self.epochs, step, len(self.batches))
                yield [(index, self.epoch, clock) for index in indices]
            else:
                yield indices


def default_workers(requested: int, processes: int = 1) -> int:
    """-1 means one worker per spare core, at most 4 (0 on a single-core machine); ``processes`` on the
    same machine (torchrun's LOCAL_WORLD_SIZE) share the cores."""
    if requested >= 0:
        return requested
    return max(0, min(4, (os.cpu_count() or 1) // max(1, processes) - 1))


def loader(
    dataset: SpeechDataset,
    order: Sampler[list[int]],
    workers: int,
    pin: bool = False,
    persistent: bool = False,
) -> DataLoader:
    """A DataLoader over ``order``'s batches whose workers read audio and compute features ahead
    (``prefetch_factor`` 4 batches each), into pinned memory with ``pin`` (CUDA); ``persistent`` keeps
    the workers from one pass to the next (change epochs with ``order.set_epoch``).

    It gets a generator of its own so that creating it never draws from the global RNG, whose state
    (dropout masks) checkpoints restore on resume.
    """
    return DataLoader(
        dataset,
        batch_sampler=order,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=persistent and workers > 0,
        generator=torch.Generator().manual_seed(0),
        prefetch_factor=4 if workers > 0 else None,
    )


class DataError(ValueError):
    """A data set that cannot be used; one line naming the files."""


@dataclass
class Split:
    """A validated data set and its duration-sorted batches."""

    name: str
    samples: list[Sample]
    batches: list[list[int]]
    dataset: SpeechDataset


def load_split(
    name: str,
    config: DataConfig,
    alphabet: Alphabet,
    features: FeatureConfig,
    log: Callable[[str], None],
    rejected_dir: Path | None = None,
    files: str | None = None,
    seed: int = 0,
) -> Split:
    """Read and validate the CSVs of split ``name`` (train, dev or test), report what was skipped and why,
    and batch the rest, with that split's options (``<name>_files``, ``<name>_batch_size``, ``limit_<name>``,
    ``reverse_<name>``; ``files`` overrides the CSV list).

    With ``rejected_dir``, every skipped sample is also listed in ``<rejected_dir>/skipped-<name>.csv``.
    The limit keeps the first usable samples in CSV order.
    """
    files = files if files is not None else getattr(config, f"{name}_files")
    limit, reverse = getattr(config, f"limit_{name}"), getattr(config, f"reverse_{name}")
    samples = manifest.read_manifests(files)
    report = manifest.validate(samples, alphabet, features, keep_empty=config.empty_transcripts == "train")
    log(report.summary(f"{name} ({files})"))
    if report.rejected and rejected_dir is not None:
        listing = rejected_dir / f"skipped-{name}.csv"
        report.write_rejected(listing)
        log(f"  every skipped {name} sample, with the reason: {listing}")
    kept = report.kept[:limit] if limit > 0 else report.kept
    if not kept:
        raise DataError(f"{name}: no usable samples in {files}")
    batches = sorted_batches(kept, getattr(config, f"{name}_batch_size"), reverse)
    augmenter = None
    if name == "train" and config.augment:
        augmenter = augment.Augmenter(config.augment, features)
        log("Augmenting the training samples: " + "; ".join(augmenter.describe()))
        spectral = augmenter.feature_domain()
        if config.device_features and spectral:
            raise DataError(
                f"--device_features leaves the loader only audio to augment, and {'; '.join(spectral)} "
                "works on spectrograms or features: drop it or --device_features"
            )
    cache = FeatureCache(config.feature_cache, features) if config.feature_cache else None
    dataset = SpeechDataset(kept, alphabet, features, augmenter, seed, cache, config.device_features)
    return Split(name, kept, batches, dataset)
