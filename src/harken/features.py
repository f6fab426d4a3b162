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

Models harken trains itself (``feature_norm`` "mean") then subtract from every frame each coefficient's
mean over the loud frames so far: of the last ``feature_norm_window`` frames, those within 30 dB of the
loudest (by c0), so that silence or noise before the speech does not drag the mean down once speech is
there. A gain only moves c0 and a fixed microphone response only moves each coefficient by a constant, so
both cancel. The mean is causal, so a stream normalises frames as they come (``RunningMean``) exactly as a
whole file does (``normalize``): frames are rounded to multiples of 2^-16 first, which makes every sum an
exact integer in any order. Frames of digital silence (every mel energy at the log floor) have no level to
remove: they count for nothing in the mean and come out as one constant frame.

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
GRID = 2.0**16  # normalised frames are computed on multiples of 1 / GRID: exact integer sums
SILENT_LOG_MEL = -18.0  # a frame's mean log mel energy below this is digital silence (the floor is -27.6,
# 16-bit quantisation noise about -8)
LOUD_DB = 30.0  # the running mean is over the frames within this many dB of the window's loudest
# A frame of digital silence comes out with c0 --feature_norm_silence (30 dB, as far as the gate reaches under
# the loudest) under the mean (-31 with 40 mel channels; speech frames lie within -60..+40), the other
# coefficients 0. At c0 -100 (checkpoints before the option), the context windows of the speech frames beside
# silence held an outlier and training on recordings took twice the epochs.
NORM_BLOCK = 64  # frames normalised together (bounds the [block, window] masks' memory)


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
    """(window [window_samples], mel [n_bins, n_mel_channels], dct [n_mel_channels, n_mfcc]), float64: made
    once per front end and device (a stream computes features every 20 ms; nothing writes into them)."""
    key = (config.window_samples, config.audio_sample_rate, config.n_mel_channels, config.n_mfcc)
    return _made_constants(*key, str(device))


@lru_cache(maxsize=16)
def _made_constants(
    window_samples: int, rate: int, n_mel_channels: int, n_mfcc: int, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_fft = _fft_length(window_samples)
    window = torch.hann_window(window_samples, periodic=True, dtype=torch.float64, device=device)
    mel = torch.from_numpy(_mel_matrix(n_fft // 2 + 1, rate, n_mel_channels, rate / 2.0))
    dct = torch.from_numpy(_dct_matrix(n_mel_channels, n_mfcc))
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
    window = _constants(config, batch.device)[0]  # [window]
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


def _silent(frames: torch.Tensor, n_mel_channels: int) -> torch.Tensor:
    """frames [..., n_mfcc] -> bool [...]: digital silence (c0 = sqrt(2 n_mel) * mean log mel energy)."""
    return frames[..., 0] < math.sqrt(2.0 * n_mel_channels) * SILENT_LOG_MEL


def _c0_of_db(db: float, config: FeatureConfig) -> float:
    """A level difference in dB in c0 units (c0 = sqrt(2 n_mel) * the mean natural-log mel energy)."""
    return db * math.log(10.0) / 20.0 * math.sqrt(2.0 * config.n_mel_channels)


def _on_grid(frames: torch.Tensor, config: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """frames [..., n_mfcc] -> (int64 multiples of 1 / GRID [..., n_mfcc], bool [...]: not digital silence)"""
    grid = torch.round(frames.to(torch.float64) * GRID).to(torch.int64)
    return grid, ~_silent(frames, config.n_mel_channels)


def _subtract_mean(
    grid: torch.Tensor,
    live: torch.Tensor,
    past: torch.Tensor,
    past_live: torch.Tensor,
    config: FeatureConfig,
) -> torch.Tensor:
    """Causal gated mean subtraction of frames on the grid [batch, time, n_mfcc] (``live`` [batch, time]:
    not digital silence, from ``_on_grid``) given the ``past`` frames before them [batch, n_past, n_mfcc]
    and ``past_live`` [batch, n_past] -> float32 [batch, time, n_mfcc].

    Frame t's mean is over the frames of the window ending at t that are within LOUD_DB of the window's
    loudest (by c0): the speech once there is any, whatever the silence or noise before it. Worked out in
    blocks of frames as [block, window] masks times the frames (a matrix product of integers below 2^53 in
    float64: exact whatever order the sums take)."""
    values = torch.cat([past, grid], dim=1)  # [batch, n_past + time, n_mfcc]
    alive = torch.cat([past_live, live], dim=1)  # [batch, n_past + time]
    loudness = torch.where(alive, values[..., 0].to(torch.float64), -math.inf)  # [batch, n_past + time]
    margin = _c0_of_db(LOUD_DB, config) * GRID  # on the grid
    width, n_past, time = config.feature_norm_window, past.shape[1], grid.shape[1]
    means = []
    for first in range(0, time, NORM_BLOCK):
        count = min(NORM_BLOCK, time - first)
        stop = n_past + first + count  # frames [start, stop) reach into this block's windows
        start = max(0, n_past + first - width + 1)
        ends = torch.arange(n_past + first, stop, device=grid.device)  # [count]: each window's last frame
        positions = torch.arange(start, stop, device=grid.device)  # [span]
        inside = (positions[None, :] <= ends[:, None]) & (positions[None, :] > ends[:, None] - width)
        level = loudness[:, start:stop].unsqueeze(1).expand(-1, count, -1)  # [batch, count, span]
        level = torch.where(inside, level, -math.inf)
        peak = level.max(dim=-1, keepdim=True).values  # [batch, count, 1]
        gate = (level >= peak - margin) & torch.isfinite(level)  # [batch, count, span]
        total = torch.bmm(
            gate.to(torch.float64), values[:, start:stop].to(torch.float64)
        )  # [batch, count, n]
        number = gate.sum(-1, keepdim=True).clamp(min=1)  # [batch, count, 1]
        means.append(total / number)
    mean = torch.cat(means, dim=1) if means else grid.to(torch.float64)  # [batch, time, n_mfcc]
    centred = (grid.to(torch.float64) - mean) / GRID
    silent = torch.zeros_like(centred)
    silent[..., 0] = -_c0_of_db(config.feature_norm_silence, config)
    return torch.where(live.unsqueeze(-1), centred, silent).to(torch.float32)


def normalize(frames: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """The model's view of MFCC frames [batch, time, n_mfcc] -> [batch, time, n_mfcc]: as they are with
    ``feature_norm`` none, each row's causal running mean subtracted with mean (and auto, which is mean for
    a new model). A row's frames never depend on later ones, so padding after a row's end changes none of
    its frames."""
    if config.feature_norm == "none":
        return frames
    batch, _, width = frames.shape
    empty = frames.new_zeros((batch, 0, width), dtype=torch.int64)
    return _subtract_mean(*_on_grid(frames, config), empty, empty[..., 0].bool(), config)


class RunningMean:
    """``normalize`` for a stream: frames fed in pieces come out exactly as the whole file's would."""

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._past = torch.zeros((1, 0, config.n_mfcc), dtype=torch.int64)  # [1, n_past, n_mfcc]
        self._past_live = torch.zeros((1, 0), dtype=torch.bool)  # [1, n_past]

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [time, n_mfcc] -> [time, n_mfcc]"""
        if self.config.feature_norm == "none" or frames.shape[0] == 0:
            return frames
        grid, live = _on_grid(frames.unsqueeze(0), self.config)  # [1, time, n_mfcc], [1, time]
        result = _subtract_mean(grid, live, self._past, self._past_live, self.config)[0]
        past = torch.cat([self._past, grid], dim=1)  # [1, n_past + time, n_mfcc]
        past_live = torch.cat([self._past_live, live], dim=1)  # [1, n_past + time]
        drop = max(0, past.shape[1] - (self.config.feature_norm_window - 1))  # a window reaches back that far
        self._past, self._past_live = past[:, drop:], past_live[:, drop:]
        return result


def model_input(frames: torch.Tensor, lengths: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """A padded batch of MFCC frames [batch, time, n_mfcc] with ``lengths`` [batch] -> the model's context
    windows [batch, time, n_input]: normalised, the padding after each row's end zero again (as a stream's
    last windows see zeros after the audio)."""
    normal = normalize(frames, config)  # [batch, time, n_mfcc]
    if config.feature_norm != "none":
        valid = torch.arange(frames.shape[1], device=frames.device) < lengths.to(frames.device)[:, None]
        normal = normal * valid.unsqueeze(-1)
    return context_windows(normal, config.n_context)


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
    return context_windows(normalize(mfcc(samples, config).unsqueeze(0), config), config.n_context)
