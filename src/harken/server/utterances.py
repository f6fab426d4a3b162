"""One live stream's audio -> utterances: resampling to the model's rate, voice-activity endpointing, and
partial and final results. Synchronous and single-threaded; the server runs it on a worker thread.

Where an utterance ends depends only on the audio, never on how it was cut into messages: the detector
looks at 30 ms frames counted from the stream's first sample, and a stream is cut exactly where the
non-speech that ends an utterance is complete. So 20 ms and 1 s messages give the same finals, and a
recording without such a pause gives the transcript of the whole file (``Model.stt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.signal import firwin

from harken import audio
from harken.inference import Model, Stream
from harken.transcribe import words_of

VAD_RATES = (8000, 16000, 32000, 48000)  # what WebRTC's detector takes
Event = dict[str, Any]


class Resampler:
    """``audio.resample`` (scipy's ``resample_poly``, zero padding at both ends) fed in pieces: each output
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


@dataclass(frozen=True)
class Endpointing:
    endpoint_ms: int = 600  # non-speech that ends an utterance
    aggressiveness: int = 2  # WebRTC's detector, 0-3; -1: no endpointing (pieces of max_seconds)
    max_seconds: float = 30.0  # an utterance is cut here however it goes on


class Utterances:
    """16-bit PCM at ``sample_rate`` in, events out: ``{"type": "partial", "text"}`` whenever the current
    utterance's text changes, ``{"type": "final", "text", "start", "end", "confidence", "words"}`` when it
    ends (times in seconds from the stream's start). ``model`` decodes as it is configured."""

    def __init__(
        self,
        model: Model,
        sample_rate: int,
        endpointing: Endpointing = Endpointing(),
        num_results: int = 1,
    ) -> None:
        self.model = model
        self.rate = model.sample_rate
        self.endpointing = endpointing
        self.num_results = num_results  # above 1, finals list the next-best candidates too
        self._resampler = Resampler(sample_rate, self.rate) if sample_rate != self.rate else None
        self._vad: Any = None
        if endpointing.aggressiveness >= 0 and self.rate in VAD_RATES:
            import webrtcvad

            self._vad = webrtcvad.Vad(endpointing.aggressiveness)
        self._frame = self.rate * 30 // 1000
        self._odd = b""  # half a sample left over from the last message
        self._unclassified = np.zeros(0, np.int16)  # less than one detector frame
        self._received = 0  # samples at the model's rate so far
        self._utterance_start = 0  # where the current utterance starts (as the stream has been cut)
        self._segment_start = 0  # the same as the detector sees it, possibly ahead within one message
        self._silence = 0  # detector frames of non-speech at the end of the current utterance
        self._stream: Stream = model.create_stream()
        self._partial = ""
        self.finished = False

    @property
    def seconds(self) -> float:
        """Audio received so far, in seconds."""
        return self._received / self.rate

    def feed(self, pcm: bytes) -> list[Event]:
        data = self._odd + pcm
        self._odd = data[len(data) // 2 * 2 :]
        samples = audio.from_pcm16(data[: len(data) // 2 * 2])
        if self._resampler is not None:
            samples = self._resampler.feed(samples)
        return self._take(samples)

    def finish(self) -> list[Event]:
        """The last final (always sent, possibly with empty text)."""
        events: list[Event] = []
        if self._resampler is not None:
            events = self._take(self._resampler.finish())
        final = self._final(self._received)
        self.finished = True
        return [event for event in events if event["type"] == "final"] + [final]

    def _take(self, samples: np.ndarray) -> list[Event]:
        events: list[Event] = []
        first = self._received
        done = 0
        for cut in self._cuts(samples):
            self._stream.feed_audio_content(samples[done : cut - first])
            done = cut - first
            final = self._final(cut)
            if final["text"]:
                events.append(final)
        self._stream.feed_audio_content(samples[done:])
        partial = " ".join(self._stream.intermediate_decode().split())
        if partial != self._partial:
            self._partial = partial
            events.append({"type": "partial", "text": partial})
        return events

    def _cuts(self, samples: np.ndarray) -> list[int]:
        """Where utterances end (absolute sample positions) within ``samples``, which follow what came."""
        start = self._received
        self._received += len(samples)
        if self._vad is None:
            limit = int(self.endpointing.max_seconds * self.rate)
            every = list(range(self._segment_start + limit, self._received + 1, limit))
            self._segment_start = every[-1] if every else self._segment_start
            return every
        pcm = np.concatenate([self._unclassified, audio.to_pcm16(samples)])
        origin = start - len(self._unclassified)  # absolute position of pcm[0]
        frames = len(pcm) // self._frame
        self._unclassified = pcm[frames * self._frame :]
        needed = -(-self.endpointing.endpoint_ms // 30)
        longest = int(self.endpointing.max_seconds * self.rate)
        cuts: list[int] = []
        for index in range(frames):
            frame = pcm[index * self._frame : (index + 1) * self._frame]
            end = origin + (index + 1) * self._frame
            self._silence = 0 if self._vad.is_speech(frame.tobytes(), self.rate) else self._silence + 1
            if self._silence >= needed or end - self._segment_start >= longest:
                cuts.append(end)
                self._segment_start, self._silence = end, 0
        return cuts

    def _final(self, end: int) -> Event:
        """Finish the current utterance (ending at sample ``end``) and start the next one."""
        start = self._utterance_start
        best, *others = self._stream.finish_stream_with_metadata(self.num_results).transcripts
        self._stream, self._partial, self._utterance_start = self.model.create_stream(), "", end
        first, last = start / self.rate, end / self.rate
        step = self.model.dims.features.feature_win_step / 1000.0
        words = words_of(best.tokens, first, last, step)
        final: Event = {
            "type": "final",
            "text": " ".join(best.text.split()),
            "start": round(first, 3),
            "end": round(last, 3),
            "confidence": best.confidence,
            "words": [{"word": w.word, "start": w.start, "end": w.end} for w in words],
        }
        if self.num_results > 1:
            final["candidates"] = [
                {"text": " ".join(c.text.split()), "confidence": c.confidence} for c in (best, *others)
            ]
        return final
