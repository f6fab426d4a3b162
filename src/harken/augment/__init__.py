"""Training-set augmentation from DeepSpeech 0.9's ``--augment name[key=value,...]`` specs.

Each sample goes through every augmentation, each applied with its own probability ``p``, domain by domain
(DeepSpeech's order): ``sample`` (waveform, numpy: overlay, reverb, resample, codec, volume), ``signal``
(waveform tensor), ``spectrogram`` (power spectrogram: pitch, tempo, warp, frequency_mask), ``features``
(MFCC frames); within a domain in the order the specs were given. ``time_mask``, ``dropout``, ``add`` and
``multiply`` take ``domain=signal|spectrogram|features``.

Everything random comes from the numpy generator the caller passes (``sample_rng(seed, epoch, index)``), so
a sample's augmentation is a function of (seed, epoch, index, clock) wherever it runs. ``clock`` (0.0 at the
start of training, 1.0 at its end: ``training_clock``) moves value ranges from their start to their end.
The transcript is never changed; tempo never leaves fewer frames than ``min_frames``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harken import audio, features
from harken.augment.base import (
    DOMAINS,
    Augmentation,
    AugmentationError,
    Context,
    SampleAugmentation,
    TensorAugmentation,
    ValueRange,
    build,
)
from harken.augment.spectral import Add, Dropout, FrequencyMask, Multiply, Pitch, Tempo, TimeMask, Warp
from harken.augment.waveform import Codec, Overlay, Resample, Reverb, Volume
from harken.config import FeatureConfig

__all__ = [
    "REGISTRY",
    "Augmentation",
    "AugmentationError",
    "Augmenter",
    "PreviewFile",
    "ValueRange",
    "parse_spec",
    "preview",
    "sample_rng",
    "training_clock",
]

REGISTRY: dict[str, type[Augmentation]] = {
    cls.NAME: cls
    for cls in (
        Overlay,
        Reverb,
        Resample,
        Codec,
        Volume,
        Pitch,
        Tempo,
        Warp,
        FrequencyMask,
        TimeMask,
        Dropout,
        Add,
        Multiply,
    )
}
SPEC = re.compile(r"^(?P<name>[a-z_]+)(\[(?P<params>.*)\])?$", re.DOTALL)


def parse_spec(spec: str) -> Augmentation:
    """One ``--augment`` value, e.g. ``reverb[p=0.1,delay=50.0~30.0,decay=10.0:2.0~1.0]``; a bare name
    takes DeepSpeech's defaults. AugmentationError (a ValueError, one line naming the spec) otherwise."""
    match = SPEC.match(spec.strip())
    if not match:
        raise AugmentationError(
            f"--augment {spec}: expected name[key=value,...], e.g. volume[p=0.1,dbfs=-10]"
        )
    name, body = match.group("name"), match.group("params")
    if name not in REGISTRY:
        raise AugmentationError(
            f"--augment {spec}: unknown augmentation {name!r} (known: {', '.join(REGISTRY)})"
        )
    params: dict[str, str] = {}
    for part in body.split(",") if body and body.strip() else []:
        key, equals, value = (piece.strip() for piece in part.partition("="))
        if not equals or not key:
            raise AugmentationError(f"--augment {spec}: expected key=value, got {part.strip()!r}")
        if key in params:
            raise AugmentationError(f"--augment {spec}: {key} is given twice")
        params[key] = value
    return build(REGISTRY[name], spec, params)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for sample ``index`` in ``epoch``: the same in any process, independent of the others."""
    return np.random.default_rng([seed % 2**63, max(0, epoch), max(0, index)])


def training_clock(epoch: int, epochs: int, position: int, count: int) -> float:
    """DeepSpeech's clock for the ``position``-th sample of ``count`` in ``epoch`` of ``epochs``: 0.0 at the
    start of training, rising linearly to 1.0 at its end (0.0 without epochs)."""
    if epochs <= 0 or count <= 0:
        return 0.0
    return max(0.0, min(1.0, (epoch * count + position) / (epochs * count)))


@dataclass(frozen=True)
class Drawn:
    """An augmentation that fires for this sample, with the generator it draws from."""

    augmentation: Augmentation
    rng: np.random.Generator


class Augmenter:
    """Parsed ``--augment`` specs, applied to one sample at a time (in data-loader workers; picklable)."""

    def __init__(self, specs: Sequence[str | Augmentation], config: FeatureConfig) -> None:
        self.augmentations = tuple(parse_spec(s) if isinstance(s, str) else s for s in specs)
        self.config = config

    def __len__(self) -> int:
        return len(self.augmentations)

    def describe(self) -> list[str]:
        """Each augmentation as a full spec, defaults included (for the training log)."""
        return [augmentation.describe() for augmentation in self.augmentations]

    def draw(self, rng: np.random.Generator) -> list[Drawn]:
        """The augmentations that fire for a sample, in the order they apply. Each spec has a generator of
        its own (seeded from ``rng`` in spec order; its firing is decided on it first), so changing one
        spec's ``p`` or values, or appending a spec, leaves what the others do unchanged."""
        seeds = rng.integers(0, 2**63 - 1, size=len(self.augmentations))
        drawn = []
        for augmentation, seed in zip(self.augmentations, seeds, strict=True):
            own = np.random.default_rng(int(seed))
            if own.random() < augmentation.p:
                drawn.append(Drawn(augmentation, own))
        return sorted(drawn, key=lambda d: DOMAINS.index(d.augmentation.domain))  # stable: spec order kept

    def signal(
        self, samples: np.ndarray, clock: float, rng: np.random.Generator, min_frames: int = 1
    ) -> np.ndarray:
        """The waveform after the sample- and signal-domain augmentations: float32 [n] -> float32 [n']
        (what ``apply`` computes its features from, given a generator in the same state)."""
        context = Context(self.config, max(1, min_frames))
        return self._signal(samples, clock, self.draw(rng), context).clone().numpy()

    def feature_domain(self) -> list[str]:
        """The specs that work on spectrograms or MFCC frames rather than on the waveform."""
        return [a.describe() for a in self.augmentations if a.domain not in ("sample", "signal")]

    def apply(
        self, samples: np.ndarray, clock: float, rng: np.random.Generator, min_frames: int = 1
    ) -> torch.Tensor:
        """Augmented MFCC frames of float32 samples [n] in [-1, 1] at the config's rate: [time, n_mfcc].

        ``min_frames``: the fewest frames tempo may leave (``manifest.ctc_min_frames(labels)``). With nothing
        firing this is exactly ``features.mfcc``.
        """
        context = Context(self.config, max(1, min_frames))
        drawn = self.draw(rng)
        waveform = self._signal(samples, clock, drawn, context)  # [n']
        spectral = [d for d in drawn if d.augmentation.domain == "spectrogram"]
        if spectral:
            power = features.spectrogram(waveform, self.config)  # [time, n_bins]
            if power.shape[0] > 0:
                power = self._tensor_stage(power, spectral, clock, context)
            mfcc = features.mfcc_from_spectrogram(power, self.config)  # [time', n_mfcc]
        else:
            mfcc = features.mfcc(waveform, self.config)  # [time, n_mfcc]
        if mfcc.shape[0] > 0:
            mfcc = self._tensor_stage(
                mfcc, [d for d in drawn if d.augmentation.domain == "features"], clock, context
            )
        return mfcc

    def _signal(
        self, samples: np.ndarray, clock: float, drawn: list[Drawn], context: Context
    ) -> torch.Tensor:
        """Sample-domain (numpy) then signal-domain (tensor) augmentations: [n] -> float32 tensor [n']."""
        waveform = np.asarray(samples, dtype=np.float32)  # [n]
        for item in drawn:
            if isinstance(item.augmentation, SampleAugmentation):
                waveform = item.augmentation.apply(waveform, clock, item.rng, self.config.audio_sample_rate)
        tensor = torch.from_numpy(np.ascontiguousarray(waveform))  # [n], may share the caller's memory
        signal = [d for d in drawn if d.augmentation.domain == "signal"]
        return self._tensor_stage(tensor, signal, clock, context) if signal and len(tensor) else tensor

    @staticmethod
    def _tensor_stage(
        tensor: torch.Tensor, drawn: list[Drawn], clock: float, context: Context
    ) -> torch.Tensor:
        for item in drawn:
            assert isinstance(item.augmentation, TensorAugmentation)
            tensor = item.augmentation.apply(tensor, clock, item.rng, context)
        return tensor


@dataclass(frozen=True)
class PreviewFile:
    """One written preview: the file, the audible augmentations that fired, the ones only the model sees."""

    path: Path
    audible: tuple[str, ...]
    inaudible: tuple[str, ...]


def preview(
    augmenter: Augmenter,
    samples: Sequence[object],
    out_dir: str | Path,
    n: int,
    seed: int,
    clock: float = 0.0,
) -> list[PreviewFile]:
    """Write the first ``n`` of ``samples`` (manifest Samples, or paths) after the sample- and signal-domain
    augmentations as ``out_dir/<name>.aug.wav`` (16-bit PCM at the model's rate), drawn exactly as training
    draws sample ``i`` of epoch 0 (``sample_rng(seed, 0, i)``) at ``clock``. Spectrogram- and features-domain
    augmentations change only what the model sees; they are listed, not heard."""
    out = Path(out_dir)
    written: list[PreviewFile] = []
    used: set[str] = set()
    for index, sample in enumerate(samples[: max(0, n)]):
        path = Path(getattr(sample, "path", sample))  # type: ignore[arg-type]
        waveform = audio.read(path, augmenter.config.audio_sample_rate)  # [n]
        fired = augmenter.draw(sample_rng(seed, 0, index))
        augmented = augmenter.signal(waveform, clock, sample_rng(seed, 0, index))
        name = path.stem if path.stem not in used else f"{path.stem}-{index}"
        used.add(name)
        target = out / f"{name}.aug.wav"
        audio.write(target, augmented, augmenter.config.audio_sample_rate)
        audible = tuple(d.augmentation.NAME for d in fired if d.augmentation.domain in ("sample", "signal"))
        inaudible = tuple(
            d.augmentation.NAME for d in fired if d.augmentation.domain not in ("sample", "signal")
        )
        written.append(PreviewFile(target, audible, inaudible))
    return written
