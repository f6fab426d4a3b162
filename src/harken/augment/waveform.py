"""Sample-domain augmentations: the loaded waveform (float32 numpy [n_samples] in [-1, 1]) as DeepSpeech 0.9's
``overlay``, ``reverb``, ``resample``, ``codec`` and ``volume`` changed it. Levels are DeepSpeech's *peak*
dBFS (a full-scale peak is +3.0103 dBFS, the level of a full-scale sine's RMS)."""

from __future__ import annotations

import csv
import io
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile

from harken import audio
from harken.augment.base import SampleAugmentation, ValueRange, float_range, int_range, text

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the rates libsndfile's Opus encoder takes
OPUS_MIN_BITRATE, OPUS_MAX_BITRATE = 6000, 256000  # libsndfile maps its compression level onto this span
RESAMPLE_MAX_DENOMINATOR = 160  # rate ratios are rounded to p/q with q <= 160: within ~1 Hz at 16 kHz


def max_dbfs(samples: np.ndarray) -> float:
    """Peak level in dBFS as DeepSpeech measured it (a full-scale peak is +3.0103)."""
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    return 20.0 * math.log10(max(1e-16, peak)) + 3.0103


def gain_db_to_ratio(gain_db: float) -> float:
    return math.pow(10.0, gain_db / 20.0)


def normalize(samples: np.ndarray, dbfs: float) -> np.ndarray:
    """``samples`` scaled so that their peak is at ``dbfs``, clipped to [-1, 1] (DeepSpeech's
    ``normalize_audio``). [n] -> [n], the input's dtype."""
    gain = gain_db_to_ratio(dbfs - max_dbfs(samples))
    return np.clip(samples * gain, -1.0, 1.0).astype(samples.dtype, copy=False)


@dataclass(frozen=True)
class Volume(SampleAugmentation):
    """``volume[p,dbfs]``: level the sample's peak to ``dbfs`` (3.0103: peaks at -1.0/1.0)."""

    NAME: ClassVar[str] = "volume"
    dbfs: ValueRange = float_range(3.0103)

    def apply(
        self, samples: np.ndarray, clock: float, rng: np.random.Generator, sample_rate: int
    ) -> np.ndarray:
        return normalize(samples, self.dbfs.pick(clock, rng))


@dataclass(frozen=True)
class Reverb(SampleAugmentation):
    """``reverb[p,delay,decay]``: DeepSpeech's simplified Schroeder reverb, five feedback comb filters
    (delays ``delay`` ms x 17/17, 19/17, 23/17, 29/17, 31/17, ``decay`` dB lost per reflection) summed with
    the dry signal, then levelled back to the original peak."""

    NAME: ClassVar[str] = "reverb"
    delay: ValueRange = float_range(20.0)
    decay: ValueRange = float_range(10.0)
    PRIMES: ClassVar[tuple[int, ...]] = (17, 19, 23, 29, 31)  # primes to minimise comb-filter interference

    def apply(
        self, samples: np.ndarray, clock: float, rng: np.random.Generator, sample_rate: int
    ) -> np.ndarray:
        dry = samples.astype(np.float64)  # [n]
        delay = self.delay.pick(clock, rng)
        decay = gain_db_to_ratio(-self.decay.pick(clock, rng))
        result = dry.copy()
        for prime in self.PRIMES:
            n_delay = max(16, math.floor(delay * (prime / self.PRIMES[0]) * sample_rate / 1000.0))
            layer = dry.copy()
            # y[i] = x[i] + decay * y[i - n_delay], one delay-long block at a time (vectorised per block)
            for start in range(n_delay, len(layer), n_delay):
                width = min(len(layer) - start, n_delay)
                layer[start : start + width] += decay * layer[start - n_delay : start - n_delay + width]
            result += layer
        return normalize(result, max_dbfs(dry)).astype(np.float32)


@dataclass(frozen=True)
class Resample(SampleAugmentation):
    """``resample[p,rate]``: down to ``rate`` Hz and back up (a band limit with the resampler's artefacts).
    Rates at or above the sample rate leave the audio as it is."""

    NAME: ClassVar[str] = "resample"
    rate: ValueRange = int_range(8000)

    def apply(
        self, samples: np.ndarray, clock: float, rng: np.random.Generator, sample_rate: int
    ) -> np.ndarray:
        ratio = Fraction(max(1, self.rate.pick_int(clock, rng)), sample_rate)
        if ratio >= 1:
            return samples.copy()
        ratio = max(ratio.limit_denominator(RESAMPLE_MAX_DENOMINATOR), Fraction(1, RESAMPLE_MAX_DENOMINATOR))
        low = _resample(samples, ratio)
        back = _resample(low, 1 / ratio)
        return audio.fit_length(back, len(samples))


def _resample(samples: np.ndarray, ratio: Fraction) -> np.ndarray:
    """``samples`` resampled by ``ratio`` (output rate / input rate), audio.resample's polyphase filter."""
    return audio.resample(samples, ratio.denominator, ratio.numerator)


@dataclass(frozen=True)
class Codec(SampleAugmentation):
    """``codec[p,bitrate]``: through the Opus codec and back at ``bitrate`` bits/s, as DeepSpeech did (here
    by libsndfile's Opus encoder, which takes 6 to 256 kbit/s: bitrates outside are clamped to them)."""

    NAME: ClassVar[str] = "codec"
    bitrate: ValueRange = int_range(3200)

    def apply(
        self, samples: np.ndarray, clock: float, rng: np.random.Generator, sample_rate: int
    ) -> np.ndarray:
        bitrate = min(OPUS_MAX_BITRATE, max(OPUS_MIN_BITRATE, self.bitrate.pick_int(clock, rng)))
        level = 1.0 - (bitrate - OPUS_MIN_BITRATE) / (OPUS_MAX_BITRATE - OPUS_MIN_BITRATE)
        rate = sample_rate if sample_rate in OPUS_RATES else 48000
        signal = _resample(samples, Fraction(rate, sample_rate))
        buffer = io.BytesIO()
        with soundfile.SoundFile(
            buffer, "w", rate, 1, format="OGG", subtype="OPUS", compression_level=level
        ) as handle:
            handle.write(signal)
        buffer.seek(0)
        decoded, _ = soundfile.read(buffer, dtype="float32")  # [n]
        return audio.fit_length(_resample(decoded, Fraction(sample_rate, rate)), len(samples))


class NoiseSource:
    """The audio files of a noise manifest (a DeepSpeech CSV with a ``wav_filename`` column; paths relative
    to the CSV's folder), read on demand at the model's rate and kept in a bounded cache."""

    CACHE_SAMPLES = 16_000_000  # per process: about 64 MB of float32 noise

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = read_noise_manifest(path)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached = 0

    def load(self, index: int, sample_rate: int) -> np.ndarray:
        """File ``index`` as float32 [n] at ``sample_rate``; AudioError naming the file when unreadable."""
        key = (index, sample_rate)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        samples = audio.read(self.files[index], sample_rate)
        self._cache[key] = samples
        self._cached += len(samples)
        while self._cached > self.CACHE_SAMPLES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached -= len(dropped)
        return samples

    def layer(self, length: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
        """``length`` samples of noise [length] (float64): from a random file at a random position, then the
        files after it in manifest order (wrapping around) as far as needed."""
        index = int(rng.integers(len(self.files)))
        first = self.load(index, sample_rate)
        offset = int(rng.integers(len(first))) if len(first) else 0
        out = np.zeros(length, dtype=np.float64)
        filled, empty = 0, 0
        while filled < length:
            noise = self.load(index, sample_rate)[offset:]
            take = min(len(noise), length - filled)
            out[filled : filled + take] = noise[:take]
            filled += take
            empty = empty + 1 if take == 0 else 0
            if empty > len(self.files):
                raise audio.AudioError(f"{self.path}: every noise file is empty")
            index, offset = (index + 1) % len(self.files), 0
        return out

    def __getstate__(self) -> dict[str, object]:
        """Pickled (into data-loader workers) without the cache."""
        return {"path": self.path, "files": self.files}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._cache, self._cached = OrderedDict(), 0


def read_noise_manifest(path: Path) -> list[Path]:
    """The audio paths of a noise CSV (``wav_filename`` column; ``transcript`` and others optional)."""
    if path.suffix.lower() == ".sdb":
        raise ValueError(f"source {path}: DeepSpeech's .sdb sample databases are not supported, use a CSV")
    if not path.is_file():
        raise ValueError(f"source {path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    header = [name.strip() for name in rows[0]] if rows else []
    if "wav_filename" not in header:
        raise ValueError(f"source {path}: not a CSV manifest with a wav_filename column")
    column = header.index("wav_filename")
    files = [Path(row[column]) for row in rows[1:] if len(row) > column and row[column].strip()]
    files = [file if file.is_absolute() else path.parent / file for file in files]
    if not files:
        raise ValueError(f"source {path}: lists no audio files")
    missing = [file for file in files if not file.is_file()]
    if missing:
        raise ValueError(f"source {path}: {len(missing)} listed files are missing, e.g. {missing[0]}")
    return files


@dataclass(frozen=True)
class Overlay(SampleAugmentation):
    """``overlay[p,source,snr,layers]``: ``layers`` layers of noise from the ``source`` manifest, each as long
    as the sample, summed and mixed ``snr`` dB (peak to peak) below the sample, which keeps its peak level."""

    NAME: ClassVar[str] = "overlay"
    source: str = text()
    snr: ValueRange = float_range(3.0)
    layers: ValueRange = int_range(1)
    noise: NoiseSource = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "noise", NoiseSource(Path(self.source)))

    def apply(
        self, samples: np.ndarray, clock: float, rng: np.random.Generator, sample_rate: int
    ) -> np.ndarray:
        speech = samples.astype(np.float64)  # [n]
        overlay = np.zeros_like(speech)
        for _ in range(max(0, self.layers.pick_int(clock, rng))):
            overlay += self.noise.layer(len(speech), rng, sample_rate)
        snr = self.snr.pick(clock, rng)
        if not overlay.any():
            return samples.copy()
        original = max_dbfs(speech)
        mixed = speech + overlay * gain_db_to_ratio(original - max_dbfs(overlay) - snr)
        return normalize(mixed, original).astype(np.float32)
