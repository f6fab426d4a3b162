"""Waveform -> MFCC frames -> context windows: DeepSpeech 0.9's front end, exactly, in torch.

DeepSpeech computed its features with TensorFlow's ``AudioSpectrogram`` and ``Mfcc`` ops on float samples
in [-1, 1] with no normalisation. This module reproduces them (checked against the ops inside a real
DeepSpeech-family ``.tflite`` run by LiteRT, see tests/test_features.py), so released DeepSpeech models
hear what they were trained on:

- frames of ``window`` samples every ``step`` samples, only whole windows (no padding);
- periodic Hann window, |rFFT|^2 over the next power of two (512 bins -> 257);
- the square root of that (magnitudes) into TF's triangular mel filterbank between 20 Hz and
  sample_rate / 2 with mel = 1127 ln(1 + f / 700);
- log with a floor of 1e-12;
- DCT-II scaled by sqrt(2 / channels) for every coefficient, the first ``n_mfcc`` kept.

All functions are pure and run on whatever device their input lives on.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from harken.config import FeatureConfig

LOWER_FREQUENCY_LIMIT = 20.0
LOG_FLOOR = 1e-12


def _fft_length(window: int) -> int:
    return 1 << (window - 1).bit_length()


def _mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


@lru_cache(maxsize=16)
def _mel_matrix(n_bins: int, sample_rate: int, n_channels: int, upper: float) -> np.ndarray:
    """TF's MfccMelFilterbank as a [n_bins, n_channels] matrix applied to spectrum magnitudes."""
    mel_low, mel_high = _mel(LOWER_FREQUENCY_LIMIT), _mel(upper)
    spacing = (mel_high - mel_low) / (n_channels + 1)
    centres = mel_low + spacing * np.arange(1, n_channels + 2)  # [n_channels + 1]
    hz_per_bin = 0.5 * sample_rate / (n_bins - 1)
    start = int(1.5 + LOWER_FREQUENCY_LIMIT / hz_per_bin)
    end = int(upper / hz_per_bin)
    matrix = np.zeros((n_bins, n_channels), dtype=np.float64)
    channel = 0
    for i in range(start, min(end, n_bins - 1) + 1):
        mel = float(_mel(i * hz_per_bin))
        while channel < n_channels and centres[channel] < mel:
            channel += 1
        lower_channel = channel - 1  # the channel whose falling edge this bin is on (-1: none)
        if lower_channel >= 0:
            weight = (centres[lower_channel + 1] - mel) / (
                centres[lower_channel + 1] - centres[lower_channel]
            )
            matrix[i, lower_channel] += weight
        else:
            weight = (centres[0] - mel) / (centres[0] - mel_low)
        if lower_channel + 1 < n_channels:
            matrix[i, lower_channel + 1] += 1.0 - weight
    return matrix


@lru_cache(maxsize=16)
def _dct_matrix(n_channels: int, n_mfcc: int) -> np.ndarray:
    """TF's MfccDct: [n_channels, n_mfcc], DCT-II scaled by sqrt(2 / n_channels) for every coefficient."""
    j = np.arange(n_channels)[:, None]
    i = np.arange(n_mfcc)[None, :]
    return math.sqrt(2.0 / n_channels) * np.cos(math.pi / n_channels * i * (j + 0.5))


def _constants(
    config: FeatureConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_fft = _fft_length(config.window_samples)
    upper = config.audio_sample_rate / 2.0
    window = torch.hann_window(config.window_samples, periodic=True, dtype=torch.float64, device=device)
    mel = torch.from_numpy(
        _mel_matrix(n_fft // 2 + 1, config.audio_sample_rate, config.n_mel_channels, upper)
    )
    dct = torch.from_numpy(_dct_matrix(config.n_mel_channels, config.n_mfcc))
    return window, mel.to(device), dct.to(device)


def n_frames(n_samples: int | torch.Tensor, config: FeatureConfig) -> int | torch.Tensor:
    """How many feature frames ``n_samples`` samples give (whole windows only; 0 when shorter than one)."""
    window, step = config.window_samples, config.step_samples
    if isinstance(n_samples, torch.Tensor):
        return torch.clamp(torch.div(n_samples - window, step, rounding_mode="floor") + 1, min=0)
    return max(0, (n_samples - window) // step + 1)


def spectrogram(samples: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """TF's ``AudioSpectrogram`` (magnitude squared): the power spectrum of each whole window.

    samples: [n_samples] or [batch, n_samples]  ->  [n_frames, n_bins] or [batch, n_frames, n_bins] (float32,
    n_bins = next power of two of the window / 2 + 1: 257 at 16 kHz). DeepSpeech's spectrogram-domain
    augmentations work on this tensor; ``mfcc_from_spectrogram`` finishes the front end.
    """
    squeeze = samples.dim() == 1
    batch = samples.reshape(1, -1) if squeeze else samples
    size, step = config.window_samples, config.step_samples
    n_bins = _fft_length(size) // 2 + 1
    count = n_frames(batch.shape[-1], config)
    assert isinstance(count, int)
    if count == 0:
        empty = batch.new_zeros((batch.shape[0], 0, n_bins), dtype=torch.float32)
        return empty[0] if squeeze else empty
    window = torch.hann_window(size, periodic=True, dtype=torch.float64, device=batch.device)
    frames = batch.to(torch.float64).unfold(-1, size, step)  # [batch, n_frames, window]
    spectrum = torch.fft.rfft(frames * window, n=_fft_length(size))  # [batch, n_frames, n_bins]
    power = (spectrum.real.square() + spectrum.imag.square()).to(torch.float32)  # AudioSpectrogram's output
    return power[0] if squeeze else power


def mfcc_from_spectrogram(power: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """TF's ``Mfcc`` op on a power spectrogram from ``spectrogram``.

    power: [..., n_frames, n_bins]  ->  [..., n_frames, n_mfcc] (float32)
    Computed in float64 (cheap at these sizes) so results match TensorFlow's double-precision Mfcc op.
    """
    _, mel, dct = _constants(config, power.device)
    magnitude = power.to(torch.float64).sqrt()  # what TF's Mfcc op feeds its filterbank
    energies = torch.clamp(magnitude @ mel, min=LOG_FLOOR).log()  # [..., n_frames, n_mel_channels]
    return (energies @ dct).to(torch.float32)  # [..., n_frames, n_mfcc]


def mfcc(samples: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """MFCC frames of float samples in [-1, 1]: ``mfcc_from_spectrogram(spectrogram(samples))``.

    samples: [n_samples] or [batch, n_samples]  ->  [n_frames, n_mfcc] or [batch, n_frames, n_mfcc] (float32)
    """
    return mfcc_from_spectrogram(spectrogram(samples, config), config)


def context_windows(features: torch.Tensor, n_context: int) -> torch.Tensor:
    """Each frame with ``n_context`` frames either side (zero-padded at the edges), flattened window-major.

    features: [batch, time, n_mfcc] -> [batch, time, (2 * n_context + 1) * n_mfcc]
    Element [b, t, w * n_mfcc + c] is coefficient c of frame t - n_context + w: the layout of DeepSpeech's
    input (and of its layer_1 weights).
    """
    batch, time, width = features.shape
    if time == 0:
        return features.new_zeros((batch, 0, (2 * n_context + 1) * width))
    padded = F.pad(features, (0, 0, n_context, n_context))  # [batch, time + 2 n_context, n_mfcc]
    windows = padded.unfold(1, 2 * n_context + 1, 1)  # [batch, time, n_mfcc, 2 n_context + 1]
    return windows.transpose(2, 3).reshape(batch, time, (2 * n_context + 1) * width)


def utterance_windows(samples: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """One utterance's model input: samples [n_samples] -> context windows [1, time, n_input]."""
    return context_windows(mfcc(samples, config).unsqueeze(0), config.n_context)
