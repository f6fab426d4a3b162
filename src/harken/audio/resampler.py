"""Sample-rate conversion: a whole array at once (``resample``) or a stream fed in pieces (``Resampler``),
the same exact rational polyphase filter (scipy's ``resample_poly``), so both give the same samples."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import firwin, resample_poly


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Convert mono float samples from ``rate_in`` to ``rate_out`` (exact rational polyphase filter)."""
    if rate_in == rate_out:
        return np.ascontiguousarray(samples, dtype=np.float32)
    ratio = Fraction(rate_out, rate_in)
    out = resample_poly(samples.astype(np.float64), ratio.numerator, ratio.denominator)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


class Resampler:
    """``resample`` (scipy's ``resample_poly``, zero padding at both ends) fed in pieces: each output
    sample is computed once the input it depends on has arrived, so the joined output equals the whole
    signal's conversion to float rounding, whatever the pieces."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        ratio = Fraction(rate_out, rate_in)
        self.up, self.down = ratio.numerator, ratio.denominator
        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate
        taps = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
        pre_pad = self.down - half_len % self.down
        taps = np.concatenate([np.zeros(pre_pad), taps])
        self.pre_remove = (half_len + pre_pad) // self.down
        self.width = -(-len(taps) // self.up)  # input samples one output sample reads
        padded = np.concatenate([taps, np.zeros(self.width * self.up - len(taps))])
        self.weights = padded.reshape(self.width, self.up).T  # [phase, tap]: taps[phase + tap * up]
        self.buffer = np.zeros(self.width)  # input from absolute index ``base`` on; zeros before the start
        self.base = -self.width
        self.received = 0
        self.emitted = 0

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """float samples at rate_in -> the float32 samples at rate_out that they complete."""
        self.buffer = np.concatenate([self.buffer, samples.astype(np.float64)])
        self.received += len(samples)
        # output n reads input up to (n + pre_remove) * down // up, which must have arrived
        ready = (self.received * self.up - 1) // self.down + 1 - self.pre_remove if self.received else 0
        return self._emit(ready)

    def finish(self) -> np.ndarray:
        """The rest of the output, reading zeros after the last input sample."""
        total = -(-self.received * self.up // self.down)
        self.buffer = np.concatenate([self.buffer, np.zeros(self.width + self.pre_remove * self.down)])
        return self._emit(total)

    def _emit(self, end: int) -> np.ndarray:
        if end <= self.emitted:
            return np.zeros(0, np.float32)
        positions = (np.arange(self.emitted, end) + self.pre_remove) * self.down
        last = positions // self.up  # newest input sample each output reads
        indexes = last[:, None] - np.arange(self.width)[None, :] - self.base  # [outputs, taps]
        out = np.einsum("ot,ot->o", self.buffer[indexes], self.weights[positions % self.up])
        self.emitted = end
        keep = (self.emitted + self.pre_remove) * self.down // self.up - self.width + 1 - self.base
        if keep > 0:
            self.buffer, self.base = self.buffer[keep:], self.base + keep
        return np.clip(out, -1.0, 1.0).astype(np.float32)
