"""Recording conditions made from nothing: silence around speech, background noise, level, telephone.

Real recordings start and end in room tone, carry a microphone's noise at some distance below the speech,
come at any level and, over a telephone, through a 300-3400 Hz band in 8-bit mu-law. Synthetic speech has
none of that; ``apply`` gives it a ``Condition`` (drawn by ``draw``), so that a corpus made by a speech
synthesiser stands in for recordings, and the robustness bench and tests put test speech through the same
conditions. Everything is generated (numpy, scipy): no noise corpus to download.

Levels are peak dBFS with a full-scale peak at 0 dBFS. Samples are float32 in [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from harken import audio

NOISES = ("white", "pink", "brown", "room")
TELEPHONE_RATE = 8000
TELEPHONE_BAND = (300.0, 3400.0)  # Hz
MU = 255.0  # G.711 mu-law


def noise(kind: str, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of noise of unit RMS: white, pink (1/f power), brown (1/f^2) or room (a quiet room's
    tone: pink below 1 kHz with mains hum at 50 or 60 Hz and its harmonics). float32 [n]."""
    if kind not in NOISES:
        raise ValueError(f"unknown noise {kind!r}: one of {', '.join(NOISES)}")
    if n <= 0:
        return np.zeros(0, np.float32)
    white = rng.standard_normal(n)
    if kind == "white":
        shaped = white
    else:
        spectrum = np.fft.rfft(white)  # [n // 2 + 1]
        freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / rate), 20.0)  # below 20 Hz: as at 20 Hz
        power = {"pink": 1.0, "brown": 2.0, "room": 1.0}[kind]
        spectrum = spectrum / freqs ** (power / 2)
        if kind == "room":
            spectrum = spectrum / np.sqrt(1.0 + (freqs / 1000.0) ** 4)  # a gentle low-pass at 1 kHz
        shaped = np.fft.irfft(spectrum, n)
    if kind == "room":
        shaped = shaped / (np.sqrt(np.mean(shaped**2)) or 1.0)
        mains = rng.choice((50.0, 60.0))
        t = np.arange(n) / rate
        phases = rng.uniform(0, 2 * math.pi, 3)
        hum = sum(np.sin(2 * math.pi * mains * k * t + p) / k for k, p in zip((1, 2, 3), phases, strict=True))
        shaped = shaped + 0.3 * hum
    rms = float(np.sqrt(np.mean(shaped**2)))
    return (shaped / (rms or 1.0)).astype(np.float32)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


def at_peak(samples: np.ndarray, dbfs: float) -> np.ndarray:
    """``samples`` scaled so that their peak is at ``dbfs`` (0: full scale); silence stays silence."""
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    if peak == 0.0:
        return samples.astype(np.float32)
    return np.clip(samples * (10.0 ** (dbfs / 20.0) / peak), -1.0, 1.0).astype(np.float32)


def telephone(samples: np.ndarray, rate: int) -> np.ndarray:
    """A telephone line: band-limited to 300-3400 Hz, sampled at 8 kHz in 8-bit mu-law (G.711), and
    resampled back to ``rate``. [n] -> [n]."""
    low = audio.resample(samples, rate, TELEPHONE_RATE)  # [n * 8000 / rate]
    sos = signal.butter(4, TELEPHONE_BAND, btype="bandpass", fs=TELEPHONE_RATE, output="sos")
    band = signal.sosfilt(sos, low)
    companded = np.sign(band) * np.log1p(MU * np.minimum(np.abs(band), 1.0)) / math.log1p(MU)
    codes = np.round(companded * 127.0) / 127.0  # 8 bits: 255 levels
    expanded = np.sign(codes) * np.expm1(np.abs(codes) * math.log1p(MU)) / MU
    back = audio.resample(expanded.astype(np.float32), TELEPHONE_RATE, rate)
    return audio.fit_length(back, len(samples))


@dataclass(frozen=True)
class Condition:
    """How one utterance was "recorded"."""

    lead: float = 0.0  # seconds of silence (or noise) before the speech
    trail: float = 0.0  # ... and after it
    noise: str = ""  # one of NOISES, or "" for none (digital silence around the speech)
    snr: float = 30.0  # dB of speech RMS over noise RMS
    peak: float = -1.0  # dBFS of the result's peak
    telephone: bool = False

    def describe(self) -> str:
        """A short stable text (for file names' hashes and reports)."""
        noise = f"{self.noise}@{self.snr:.1f}dB" if self.noise else "clean"
        line = "|tel" if self.telephone else ""
        return f"{self.lead:.2f}+{self.trail:.2f}s|{noise}|{self.peak:.1f}dBFS{line}"


@dataclass(frozen=True)
class Conditions:
    """The distribution ``draw`` picks a Condition from (a training corpus's defaults)."""

    max_lead: float = 0.3  # seconds, uniform from 0 ...
    long_lead: float = 0.3  # ... except for this share, whose lead is from max_lead to max_long_lead
    max_long_lead: float = 1.5
    max_trail: float = 0.4
    noisy: float = 0.3  # share of utterances with background noise (the rest: digital silence around)
    snr: tuple[float, float] = (30.0, 50.0)  # dB, uniform
    peak: tuple[float, float] = (-35.0, -1.0)  # dBFS, uniform
    telephone: float = 0.15  # share through a telephone line
    nonspeech: float = 0.08  # recordings with nobody speaking, as a share of the speech recordings
    nonspeech_seconds: tuple[float, float] = (1.0, 4.0)  # their length, uniform
    # Share of the drawn conditions that are none at all: the recording as spoken, at a drawn level. The
    # shares above are of the rest (so 15 % telephone is 7.5 % of the corpus); a recording with nobody
    # speaking drawn as spoken is digital silence or a quiet room (``nobody``).
    as_spoken: float = 0.5

    def __post_init__(self) -> None:
        for name in ("long_lead", "noisy", "telephone", "as_spoken"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:  # NaN fails too
                raise ValueError(f"conditions: {name} must be a share from 0 to 1, got {value!r}")
        for name in ("max_lead", "max_long_lead", "max_trail", "nonspeech"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < math.inf:
                raise ValueError(f"conditions: {name} must be a number >= 0, got {value!r}")
        if self.max_long_lead < self.max_lead:
            raise ValueError(
                f"conditions: max_long_lead {self.max_long_lead} is under max_lead {self.max_lead}"
            )
        for name, lowest, highest in (
            ("snr", -math.inf, math.inf),
            ("peak", -120.0, 0.0),
            ("nonspeech_seconds", 0.0, 3600.0),
        ):
            low, high = getattr(self, name)
            if not lowest <= low <= high <= highest:
                raise ValueError(
                    f"conditions: {name} must be (low, high), {lowest} <= low <= high <= {highest}; "
                    f"got {(low, high)}"
                )


def draw(conditions: Conditions, rng: np.random.Generator) -> Condition:
    """One Condition from the distribution (a function of the generator's state only)."""
    lead = float(rng.uniform(0.0, conditions.max_lead))
    if rng.random() < conditions.long_lead:
        lead = float(rng.uniform(conditions.max_lead, conditions.max_long_lead))
    trail = float(rng.uniform(0.0, conditions.max_trail))
    noisy = bool(rng.random() < conditions.noisy)
    kind = str(rng.choice(NOISES))
    snr = float(rng.uniform(*conditions.snr))
    peak = float(rng.uniform(*conditions.peak))
    phone = bool(rng.random() < conditions.telephone)
    if rng.random() < conditions.as_spoken:
        return Condition(peak=round(peak, 1))
    return Condition(
        round(lead, 2), round(trail, 2), kind if noisy else "", round(snr, 1), round(peak, 1), phone
    )


def nobody(seconds: float, rate: int, condition: Condition, rng: np.random.Generator) -> np.ndarray:
    """A recording in ``condition`` with nobody speaking: its noise, as loud as it would be ``snr`` under
    a speech peak at ``peak``, through the telephone if asked; when the condition has no noise, digital
    silence or (as often) a quiet room's tone at -70 dBFS. [seconds * rate]"""
    n = round(seconds * rate)
    if not condition.noise and rng.random() < 0.5:
        return np.zeros(n, np.float32)
    kind, peak = (condition.noise, condition.peak - condition.snr) if condition.noise else ("room", -70.0)
    recording = noise(kind, n, rate, rng)
    if condition.telephone:
        recording = telephone(recording, rate)
    return at_peak(recording, peak)


def apply(samples: np.ndarray, rate: int, condition: Condition, rng: np.random.Generator) -> np.ndarray:
    """Speech [n] -> the recording [n + (lead + trail) * rate]: padded, noise mixed in at the SNR (of the
    speech's RMS), through the telephone if asked, then levelled to the peak."""
    speech = np.asarray(samples, dtype=np.float32)
    lead, trail = round(condition.lead * rate), round(condition.trail * rate)
    padded = np.pad(speech, (lead, trail))  # [lead + n + trail]
    if condition.noise:
        level = rms(speech) / 10.0 ** (condition.snr / 20.0)
        padded = padded + level * noise(condition.noise, len(padded), rate, rng)
    if condition.telephone:
        padded = telephone(padded, rate)
    return at_peak(padded, condition.peak)
