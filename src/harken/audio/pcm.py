"""Samples as numbers: 16-bit PCM <-> float32 in [-1, 1] (DeepSpeech's int16 / 32768 scale), and lengths."""

from __future__ import annotations

import numpy as np


def from_pcm16(pcm: bytes | np.ndarray) -> np.ndarray:
    """16-bit little-endian PCM (bytes or an int16 array) as float32 in [-1, 1]."""
    array = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray) else np.asarray(pcm)
    return array.astype(np.float32) / 32768.0


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16 (clipped)."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """[m] -> float32 [length]: cut, or padded with zeros (after a resampling round trip)."""
    if len(samples) >= length:
        return np.ascontiguousarray(samples[:length], dtype=np.float32)
    return np.pad(samples, (0, length - len(samples))).astype(np.float32)
