"""One live stream's audio -> utterances: resampling to the model's rate, voice-activity endpointing, and
partial and final results. Synchronous and single-threaded; the server runs it on a worker thread.

Where an utterance ends depends only on the audio, never on how it was cut into messages: the detector
looks at 30 ms frames counted from the stream's first sample, and a stream is cut exactly where the
non-speech that ends an utterance is complete. So 20 ms and 1 s messages give the same finals, and a
recording without such a pause gives the transcript of the whole file (``Model.stt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harken import audio
from harken.inference import Model, Stream
from harken.transcribe import words_of

Event = dict[str, Any]


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
        self._resampler = audio.Resampler(sample_rate, self.rate) if sample_rate != self.rate else None
        self._vad = audio.voice_detector(endpointing.aggressiveness, self.rate)
        self._frame = self.rate * audio.FRAME_MS // 1000
        self._odd = b""  # half a sample left over from the last message
        self._unclassified = np.zeros(0, np.int16)  # less than one detector frame
        self._received = 0  # samples at the model's rate so far
        self._utterance_start = 0  # where the current utterance starts (as the stream has been cut)
        self._segment_start = 0  # the same as the detector sees it, possibly ahead within one message
        self._silence = 0  # detector frames of non-speech at the end of the current utterance
        self._stream: Stream = model.create_stream()
        self._partial = ""
        self._unheard: list[np.ndarray] = []  # the current utterance's audio while its text is empty
        self.finished = False

    def use(self, model: Model) -> None:
        """Decode with ``model`` (the same network configured otherwise: other hot words, say) from the
        utterance under way if nothing has been heard in it yet (its audio is decoded again), else from
        the next one."""
        self.model = model
        if not self._partial:
            self._stream = model.create_stream()
            if self._unheard:
                self._stream.buffer_audio(np.concatenate(self._unheard))

    @property
    def seconds(self) -> float:
        """Audio received so far, in seconds."""
        return self._received / self.rate

    def feed(self, pcm: bytes) -> list[Event]:
        """Take ``pcm``, run the model on it (this stream alone) and say what changed."""
        events = self.take(pcm)
        self.stream.step()  # the model on what ``take`` buffered
        return events + self.partial()

    def take(self, pcm: bytes) -> list[Event]:
        """Take ``pcm`` up to the model: the finals of the utterances it ends, and the rest buffered in
        ``stream`` for a model step (``inference.step_streams`` steps many streams' together); then
        ``partial``."""
        data = self._odd + pcm
        self._odd = data[len(data) // 2 * 2 :]
        samples = audio.from_pcm16(data[: len(data) // 2 * 2])
        if self._resampler is not None:
            samples = self._resampler.feed(samples)
        return self._take(samples)

    @property
    def stream(self) -> Stream:
        """The current utterance's stream."""
        return self._stream

    def partial(self) -> list[Event]:
        """``{"type": "partial", "text"}`` when the current utterance's text has changed, else nothing."""
        partial = " ".join(self._stream.intermediate_decode().split())
        if partial == self._partial:
            return []
        self._partial = partial
        self._unheard = []  # heard: a change of model waits for the next utterance
        return [{"type": "partial", "text": partial}]

    def finish(self) -> list[Event]:
        """The last final (always sent, possibly with empty text)."""
        return self.flush() + self.last_final()

    def flush(self) -> list[Event]:
        """The end of the audio taken up to the model (the resampler's last samples): the finals of the
        utterances it ends; then ``last_final`` (``inference.step_streams(final=True)`` may run the
        model on ``stream``'s last windows first, with other streams')."""
        return self._take(self._resampler.finish()) if self._resampler is not None else []

    def last_final(self) -> list[Event]:
        """The final of the utterance under way when the audio ended (always, possibly with empty text)."""
        final = self._final(self._received)
        self.finished = True
        return [final]

    def _take(self, samples: np.ndarray) -> list[Event]:
        """Finals of the utterances ``samples`` end; the rest buffered (the model not run on it)."""
        events: list[Event] = []
        first = self._received
        done = 0
        for cut in self._cuts(samples):
            self._buffer(samples[done : cut - first])
            done = cut - first
            final = self._final(cut)
            if final["text"]:
                events.append(final)
        self._buffer(samples[done:])
        return events

    def _buffer(self, samples: np.ndarray) -> None:
        """Into the current utterance's stream (and kept while it has no text: at most an utterance's
        length, --endpoint max 30 s)."""
        self._stream.buffer_audio(samples)
        if not self._partial and len(samples):
            self._unheard.append(samples)

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
        needed = -(-self.endpointing.endpoint_ms // audio.FRAME_MS)
        longest = int(self.endpointing.max_seconds * self.rate)
        cuts: list[int] = []
        for index in range(frames):
            frame = pcm[index * self._frame : (index + 1) * self._frame]
            end = origin + (index + 1) * self._frame
            self._silence = 0 if self._vad.is_speech(frame) else self._silence + 1
            if self._silence >= needed or end - self._segment_start >= longest:
                cuts.append(end)
                self._segment_start, self._silence = end, 0
        return cuts

    def _final(self, end: int) -> Event:
        """Finish the current utterance (ending at sample ``end``) and start the next one."""
        start = self._utterance_start
        best, *others = self._stream.finish_stream_with_metadata(self.num_results).transcripts
        self._stream, self._partial, self._utterance_start = self.model.create_stream(), "", end
        self._unheard = []
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
