"""WebRTC's voice-activity detector as harken sets it up (harken.audio.activity)."""

from pathlib import Path

import numpy as np
import pytest

from harken import audio

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("rate", audio.VAD_RATES)
def test_frames_are_30_ms_and_speech_is_told_from_silence(rate: int) -> None:
    detector = audio.voice_detector(3, rate)
    assert detector is not None and detector.frame == rate * audio.FRAME_MS // 1000
    speech = audio.to_pcm16(audio.read(DATA / "LDC93S1.wav", rate))
    silence = np.zeros(rate, np.int16)
    pcm = np.concatenate([silence, speech, silence])
    voiced = detector.frames(pcm)
    assert len(voiced) == len(pcm) // detector.frame  # the partial frame at the end is left out
    second = rate // detector.frame  # frames in a second
    assert not any(voiced[: second - 1]) and not any(voiced[-second + 1 :])
    assert sum(voiced) > 0.5 * len(speech) / detector.frame
    again = audio.voice_detector(3, rate)  # frame by frame, as a stream feeds it: the same answers
    assert again is not None
    frames = [pcm[i : i + again.frame] for i in range(0, len(pcm) - again.frame + 1, again.frame)]
    assert [again.is_speech(frame) for frame in frames] == voiced


def test_no_detector_where_none_is_asked_for_or_the_rate_is_not_taken() -> None:
    assert audio.voice_detector(-1, 16000) is None
    assert audio.voice_detector(2, 22050) is None and audio.voice_detector(2, 44100) is None
    assert isinstance(audio.voice_detector(0, 8000), audio.VoiceDetector)
