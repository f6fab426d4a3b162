"""What every augmentation is: DeepSpeech 0.9's value ranges, the four domains, the base classes, and how a
spec's ``key=value`` pairs become an augmentation's fields.

A value range is DeepSpeech's ``<start>:<end>~<radius>``: the centre moves linearly from ``start`` (clock
0.0, the start of training) to ``end`` (clock 1.0, its end) and each pick is uniform within ``radius`` of it;
integer ranges round the pick (half to even, as Python's ``round`` and TensorFlow's ``round`` do).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from harken.config import FeatureConfig

# The order in which the domains are applied to a sample (DeepSpeech's order): ``sample`` augmentations
# work on the loaded waveform as numpy, ``signal`` ones on the waveform as a tensor, ``spectrogram`` ones on
# the power spectrogram (TF's AudioSpectrogram output), ``features`` ones on the MFCC frames.
DOMAINS = ("sample", "signal", "spectrogram", "features")
KIND = "kind"  # field metadata key: how a spec's text becomes the field's value


class AugmentationError(ValueError):
    """A ``--augment`` spec that cannot be used; the one-line message names the spec."""


@dataclass(frozen=True)
class ValueRange:
    """DeepSpeech's ``<float-range>`` / ``<int-range>``: ``value``, ``value~radius``, ``start:end``,
    ``start:end~radius``."""

    start: float
    end: float
    radius: float = 0.0
    integer: bool = False

    @classmethod
    def constant(cls, value: float, integer: bool = False) -> ValueRange:
        return cls(value, value, 0.0, integer)

    @classmethod
    def parse(cls, text: str, integer: bool = False) -> ValueRange:
        """``text`` as DeepSpeech's ``get_value_range`` read it; ValueError when it is not one."""
        convert = _int if integer else _float
        parts = text.split("~")
        if len(parts) > 2:
            raise ValueError(f"{text!r} has more than one '~'")
        radius = convert(parts[1]) if len(parts) == 2 else 0
        bounds = parts[0].split(":")
        if len(bounds) > 2:
            raise ValueError(f"{text!r} has more than one ':'")
        start = convert(bounds[0])
        end = convert(bounds[1]) if len(bounds) == 2 else start
        if radius < 0:
            raise ValueError(f"{text!r} has a negative radius")
        return cls(start, end, radius, integer)

    def centre(self, clock: float) -> float:
        """The range's centre at ``clock`` (clamped to [0, 1]): start at 0.0, end at 1.0."""
        clock = max(0.0, min(1.0, float(clock)))
        return self.start + clock * (self.end - self.start)

    def pick(self, clock: float, rng: np.random.Generator) -> float:
        """One value: uniform in [centre - radius, centre + radius], rounded for an integer range."""
        centre = self.centre(clock)
        value = float(rng.uniform(centre - self.radius, centre + self.radius))
        return float(round(value)) if self.integer else value

    def pick_int(self, clock: float, rng: np.random.Generator) -> int:
        return int(round(self.pick(clock, rng)))

    def __str__(self) -> str:
        def show(value: float) -> str:
            return str(int(value)) if self.integer else repr(float(value))

        text = show(self.start) if self.start == self.end else f"{show(self.start)}:{show(self.end)}"
        return f"{text}~{show(self.radius)}" if self.radius else text


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text.strip()!r} is not a finite number")
    return value


def float_range(default: float | tuple[float, float, float]) -> Any:
    """A dataclass field holding a ``<float-range>`` (``default``: a constant or (start, end, radius))."""
    value = ValueRange(*default) if isinstance(default, tuple) else ValueRange.constant(default)
    return field(default=value, metadata={KIND: "float_range"})


def int_range(default: int) -> Any:
    """A dataclass field holding an ``<int-range>``."""
    return field(default=ValueRange.constant(default, integer=True), metadata={KIND: "int_range"})


def number(default: float) -> Any:
    """A dataclass field holding one float (no range)."""
    return field(default=default, metadata={KIND: "float"})


def text(default: str | None = None) -> Any:
    """A dataclass field holding a string; ``None``: the spec must give it."""
    return field(default=default, metadata={KIND: "text"})


@dataclass(frozen=True)
class Context:
    """What tensor augmentations need besides the tensor: the front end's geometry and the fewest frames
    the features may have (CTC needs at least one per label, plus a blank between repeats)."""

    config: FeatureConfig
    min_frames: int = 1


@dataclass(frozen=True)
class Augmentation:
    """One ``--augment`` spec: applied to a sample with probability ``p`` in its ``domain``."""

    NAME: ClassVar[str] = ""
    DOMAINS: ClassVar[tuple[str, ...]] = ("sample",)  # the domains it may work in; the first is the default

    p: float = field(default=1.0, metadata={KIND: "probability"})
    domain: str = field(default="", metadata={KIND: "domain"})

    def __post_init__(self) -> None:
        if not self.domain:
            object.__setattr__(self, "domain", self.DOMAINS[0])
        if self.domain not in self.DOMAINS:
            raise ValueError(f"domain {self.domain!r} is not one of {', '.join(self.DOMAINS)}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p={self.p} is not a probability between 0.0 and 1.0")

    def describe(self) -> str:
        """The augmentation as a spec (every parameter, defaults included)."""
        parts = [f"p={self.p:g}"]
        for item in dataclasses.fields(self):
            if item.name == "p" or (item.name == "domain" and len(self.DOMAINS) == 1) or not item.init:
                continue
            parts.append(f"{item.name}={getattr(self, item.name)}")
        return f"{self.NAME}[{','.join(parts)}]"


@dataclass(frozen=True)
class SampleAugmentation(Augmentation):
    """Works on the loaded waveform (numpy), like DeepSpeech's sample-domain augmentations."""

    def apply(
        self, samples: np.ndarray, clock: float, rng: np.random.Generator, sample_rate: int
    ) -> np.ndarray:
        """samples: float32 [n_samples] in [-1, 1] -> float32 [n_samples'] (the input is not modified)."""
        raise NotImplementedError


@dataclass(frozen=True)
class TensorAugmentation(Augmentation):
    """Works on a tensor of the pipeline: the waveform [n_samples] (``signal``), the power spectrogram
    [time, n_bins] (``spectrogram``) or the MFCC frames [time, n_mfcc] (``features``)."""

    DOMAINS: ClassVar[tuple[str, ...]] = ("spectrogram",)

    def apply(
        self, tensor: torch.Tensor, clock: float, rng: np.random.Generator, context: Context
    ) -> torch.Tensor:
        raise NotImplementedError

    def units_per_ms(self, config: FeatureConfig) -> float:
        """Elements of the time axis per millisecond in this augmentation's domain."""
        return config.audio_sample_rate / 1000.0 if self.domain == "signal" else 1.0 / config.feature_win_step


def build(cls: type[Augmentation], spec: str, params: dict[str, str]) -> Augmentation:
    """An instance of ``cls`` from a spec's ``key=value`` pairs; AugmentationError (one line) otherwise."""
    settable = {
        item.name: item
        for item in dataclasses.fields(cls)
        if item.init and not (item.name == "domain" and len(cls.DOMAINS) == 1)
    }
    values: dict[str, Any] = {}
    for key, raw in params.items():
        if key not in settable:
            known = ", ".join(settable)
            raise AugmentationError(f"--augment {spec}: {cls.NAME} has no parameter {key!r} (it has {known})")
        try:
            values[key] = _convert(settable[key].metadata[KIND], raw)
        except ValueError as error:
            raise AugmentationError(f"--augment {spec}: {key}: {error}") from None
    missing = [name for name, item in settable.items() if item.default is None and name not in values]
    if missing:
        raise AugmentationError(
            f"--augment {spec}: {cls.NAME} needs {', '.join(f'{m}=...' for m in missing)}"
        )
    try:
        return cls(**values)
    except (ValueError, OSError) as error:
        raise AugmentationError(f"--augment {spec}: {error}") from None


def _convert(kind: str, raw: str) -> Any:
    if kind == "float_range":
        return ValueRange.parse(raw)
    if kind == "int_range":
        return ValueRange.parse(raw, integer=True)
    if kind in ("float", "probability"):
        return _float(raw)
    if kind == "domain":
        return raw.strip()
    if not raw.strip():
        raise ValueError("is empty")
    return raw.strip()
