"""Voice activity: WebRTC's detector (as DeepSpeech's transcribe.py used it), set up in one place for the
two that cut audio at pauses, ``harken transcribe`` (long files) and the service's live streams."""

from __future__ import annotations

from typing import Any

import numpy as np

VAD_RATES = (8000, 16000, 32000, 48000)  # what WebRTC's detector takes
FRAME_MS = 30  # the detector looks at frames of 10, 20 or 30 ms; harken always uses 30


class VoiceDetector:
    """Speech or not, for 30 ms frames of 16-bit PCM at ``rate`` (one of VAD_RATES). ``aggressiveness``
    0-3: how readily a frame is called non-speech."""

    def __init__(self, aggressiveness: int, rate: int) -> None:
        import webrtcvad

        self.rate = rate
        self.frame = rate * FRAME_MS // 1000  # samples a frame
        self._vad: Any = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        """Whether one frame (int16 [frame]) holds speech."""
        return bool(self._vad.is_speech(frame.tobytes(), self.rate))

    def frames(self, pcm: np.ndarray) -> list[bool]:
        """Each whole frame of int16 ``pcm`` [n], counted from its first sample: speech or not (a partial
        frame at the end is left out)."""
        size = self.frame
        return [self.is_speech(pcm[i : i + size]) for i in range(0, len(pcm) - size + 1, size)]


def voice_detector(aggressiveness: int, rate: int) -> VoiceDetector | None:
    """The detector for ``rate``, or None where there is none: ``aggressiveness`` -1 (no detection asked
    for) or a rate the detector does not take."""
    return VoiceDetector(aggressiveness, rate) if aggressiveness >= 0 and rate in VAD_RATES else None
