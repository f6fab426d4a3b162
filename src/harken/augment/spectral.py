"""Tensor augmentations: DeepSpeech 0.9's ``pitch``, ``tempo``, ``warp`` and ``frequency_mask`` on the power
spectrogram [time, n_bins] (TF's AudioSpectrogram output, before the Mfcc op, where DeepSpeech applied
them), and ``time_mask``, ``dropout``, ``add``, ``multiply`` in the domain their spec names: the waveform
[n_samples] (``signal``), the spectrogram, or the MFCC frames [time, n_mfcc] (``features``).

Every op returns a new tensor (inputs may share memory with the caller's numpy arrays) and draws its
randomness from the numpy generator it is given, so results depend only on that generator's seed; the
arithmetic runs on the tensor's device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from harken.augment.base import Context, TensorAugmentation, ValueRange, float_range, int_range, number

MIN_TEMPO = 0.1  # tempo factors below this are taken as it: at most ten times as many frames
ANY_DOMAIN = ("spectrogram", "signal", "features")


def resize_axis(tensor: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Linear interpolation of ``tensor`` to ``size`` elements along ``axis``, as TensorFlow 1's
    ``resize_bilinear`` (align_corners=False, no half-pixel centres): output i reads input i * n / size."""
    n = tensor.shape[axis]
    source = torch.arange(size, dtype=torch.float64, device=tensor.device) * (n / size)  # [size]
    low = source.floor().long().clamp(max=n - 1)
    high = (low + 1).clamp(max=n - 1)
    shape = [1] * tensor.dim()
    shape[axis] = size
    fraction = (source - low).to(tensor.dtype).reshape(shape)
    first, second = tensor.index_select(axis, low), tensor.index_select(axis, high)
    return first + (second - first) * fraction


def _noise(rng: np.random.Generator, like: torch.Tensor, mean: float, stddev: float) -> torch.Tensor:
    """Normal noise shaped like ``like``, drawn from ``rng`` (float32, on ``like``'s device)."""
    values = rng.standard_normal(tuple(like.shape), dtype=np.float32) * np.float32(abs(stddev)) + mean
    return torch.from_numpy(values).to(device=like.device, dtype=like.dtype)


@dataclass(frozen=True)
class Pitch(TensorAugmentation):
    """``pitch[p,pitch]``: the frequency axis stretched by ``pitch`` (2.0: an octave up), cut or zero-padded
    back to its bins."""

    NAME: ClassVar[str] = "pitch"
    pitch: ValueRange = float_range((1.075, 1.075, 0.125))

    def apply(
        self, tensor: torch.Tensor, clock: float, rng: np.random.Generator, context: Context
    ) -> torch.Tensor:
        bins = tensor.shape[1]  # tensor: [time, n_bins]
        new_bins = max(1, int(bins * self.pitch.pick(clock, rng)))
        stretched = resize_axis(tensor, new_bins, axis=1)[:, :bins]  # [time, min(n_bins, new_bins)]
        return F.pad(stretched, (0, bins - stretched.shape[1]))  # [time, n_bins]


@dataclass(frozen=True)
class Tempo(TensorAugmentation):
    """``tempo[p,factor,max_time]``: the time axis shrunk by ``factor`` (2.0: twice as fast) with the pitch
    kept, as DeepSpeech did it (a linear resize of the spectrogram's frames). ``max_time`` > 0 caps the
    result at that many ms; never fewer frames than the transcript needs."""

    NAME: ClassVar[str] = "tempo"
    factor: ValueRange = float_range(1.1)
    max_time: float = number(-1.0)

    def apply(
        self, tensor: torch.Tensor, clock: float, rng: np.random.Generator, context: Context
    ) -> torch.Tensor:
        factor = max(MIN_TEMPO, self.factor.pick(clock, rng))
        frames = int(tensor.shape[0] / factor)  # tensor: [time, n_bins]
        if self.max_time > 0:
            frames = min(frames, int(self.max_time * self.units_per_ms(context.config)))
        frames = max(frames, context.min_frames, 1)
        return resize_axis(tensor, frames, axis=0)  # [frames, n_bins]


@dataclass(frozen=True)
class Warp(TensorAugmentation):
    """``warp[p,nt,nf,wt,wf]``: a smooth non-linear warp of the spectrogram. A grid of ``nt`` x ``nf`` inner
    points (zero shift on the edges) is shifted by normal noise of standard deviation ``wt`` / ``wf`` times
    half a grid cell, the shifts are interpolated bicubically over every bin, and each output bin reads
    the input at its position minus its shift (bilinearly, clamped to the edges)."""

    NAME: ClassVar[str] = "warp"
    nt: ValueRange = int_range(1)
    nf: ValueRange = int_range(1)
    wt: ValueRange = float_range(0.1)
    wf: ValueRange = float_range(0.0)

    def apply(
        self, tensor: torch.Tensor, clock: float, rng: np.random.Generator, context: Context
    ) -> torch.Tensor:
        time, bins = tensor.shape  # tensor: [time, n_bins]
        num_t, num_f = max(0, self.nt.pick_int(clock, rng)), max(0, self.nf.pick_int(clock, rng))
        if time < 2 or bins < 2 or num_t * num_f == 0:
            return tensor.clone()
        flows = []
        for warp, size, count in ((self.wt, time, num_t), (self.wf, bins, num_f)):
            stddev = abs(warp.pick(clock, rng)) * size / (2 * (count + 1))
            inner = rng.normal(0.0, 1.0, (num_t, num_f)) * stddev
            flows.append(np.pad(inner, 1))  # [num_t + 2, num_f + 2], zero on the edges
        grid = torch.from_numpy(np.stack(flows)).to(torch.float32).unsqueeze(0)  # [1, 2, nt + 2, nf + 2]
        flow = F.interpolate(grid, size=(time, bins), mode="bicubic", align_corners=True)[0]  # [2, T, F]
        flow = flow.to(tensor.device)
        rows = torch.arange(time, device=tensor.device, dtype=torch.float32)[:, None] - flow[0]  # [T, F]
        cols = torch.arange(bins, device=tensor.device, dtype=torch.float32)[None, :] - flow[1]  # [T, F]
        where = torch.stack([cols / (bins - 1) * 2 - 1, rows / (time - 1) * 2 - 1], dim=-1)  # [T, F, 2]
        warped = F.grid_sample(
            tensor[None, None].float(),
            where[None],
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
        return warped[0, 0].to(tensor.dtype)  # [time, n_bins]


@dataclass(frozen=True)
class FrequencyMask(TensorAugmentation):
    """``frequency_mask[p,n,size]``: ``n`` bands of ``size`` spectrogram bins set to zero (SpecAugment)."""

    NAME: ClassVar[str] = "frequency_mask"
    n: ValueRange = int_range(3)
    size: ValueRange = int_range(2)

    def apply(
        self, tensor: torch.Tensor, clock: float, rng: np.random.Generator, context: Context
    ) -> torch.Tensor:
        out = tensor.clone()  # [time, n_bins]
        bins = out.shape[1]
        if bins < 2:
            return out
        for _ in range(max(0, self.n.pick_int(clock, rng))):
            size = max(1, min(bins - 1, self.size.pick_int(clock, rng)))
            start = int(rng.integers(0, bins - size))
            out[:, start : start + size] = 0
        return out


@dataclass(frozen=True)
class TimeMask(TensorAugmentation):
    """``time_mask[p,n,size,domain]``: ``n`` stretches of ``size`` ms set to zero (SpecAugment)."""

    NAME: ClassVar[str] = "time_mask"
    DOMAINS: ClassVar[tuple[str, ...]] = ANY_DOMAIN
    n: ValueRange = int_range(3)
    size: ValueRange = float_range(10.0)

    def apply(
        self, tensor: torch.Tensor, clock: float, rng: np.random.Generator, context: Context
    ) -> torch.Tensor:
        out = tensor.clone()  # [time, ...]: samples or frames
        length = out.shape[0]
        if length < 2:
            return out
        for _ in range(max(0, self.n.pick_int(clock, rng))):
            size = int(self.size.pick(clock, rng) * self.units_per_ms(context.config))
            size = max(1, min(length - 1, size))
            start = int(rng.integers(0, length - size))
            out[start : start + size] = 0
        return out


@dataclass(frozen=True)
class Dropout(TensorAugmentation):
    """``dropout[p,rate,domain]``: each value set to zero with probability ``rate``."""

    NAME: ClassVar[str] = "dropout"
    DOMAINS: ClassVar[tuple[str, ...]] = ANY_DOMAIN
    rate: ValueRange = float_range(0.05)

    def apply(
        self, tensor: torch.Tensor, clock: float, rng: np.random.Generator, context: Context
    ) -> torch.Tensor:
        rate = max(0.0, self.rate.pick(clock, rng))
        keep = torch.from_numpy(rng.random(tuple(tensor.shape), dtype=np.float32) >= rate)
        return tensor * keep.to(device=tensor.device, dtype=tensor.dtype)


@dataclass(frozen=True)
class Add(TensorAugmentation):
    """``add[p,stddev,domain]``: normal noise of mean 0 and ``stddev`` added to every value."""

    NAME: ClassVar[str] = "add"
    DOMAINS: ClassVar[tuple[str, ...]] = ("features", "signal", "spectrogram")
    stddev: ValueRange = float_range(5.0)

    def apply(
        self, tensor: torch.Tensor, clock: float, rng: np.random.Generator, context: Context
    ) -> torch.Tensor:
        return tensor + _noise(rng, tensor, 0.0, self.stddev.pick(clock, rng))


@dataclass(frozen=True)
class Multiply(TensorAugmentation):
    """``multiply[p,stddev,domain]``: every value multiplied by normal noise of mean 1 and ``stddev``."""

    NAME: ClassVar[str] = "multiply"
    DOMAINS: ClassVar[tuple[str, ...]] = ("features", "signal", "spectrogram")
    stddev: ValueRange = float_range(5.0)

    def apply(
        self, tensor: torch.Tensor, clock: float, rng: np.random.Generator, context: Context
    ) -> torch.Tensor:
        return tensor * _noise(rng, tensor, 1.0, self.stddev.pick(clock, rng))
