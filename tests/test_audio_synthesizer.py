"""espeak-ng speech synthesis (harken.audio.synthesizer): samples, rates, voices, determinism, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from harken.audio import synthesizer
from harken.audio.synthesizer import Synthesizer


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer()


def test_speak_gives_plausible_int16_speech(synth: Synthesizer) -> None:
    samples, rate = synth.speak("turn the red lamp on", "en-us+m3")
    assert rate == 22050
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert 0.6 < len(samples) / rate < 3.0  # five words at 175 words per minute
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert rms > 500 and int(np.abs(samples).max()) > 5000


def test_rate_slows_speech_down(synth: Synthesizer) -> None:
    slow, _ = synth.speak("set the timer to seven minutes", "en+m1", rate=120)
    fast, _ = synth.speak("set the timer to seven minutes", "en+m1", rate=240)
    assert len(slow) > 1.4 * len(fast)


def test_different_voices_sound_different(synth: Synthesizer) -> None:
    def spectrum(voice: str) -> np.ndarray:
        samples, _ = synth.speak("show me the green door", voice)
        frames = samples[: len(samples) // 512 * 512].reshape(-1, 512).astype(np.float64)
        power = np.abs(np.fft.rfft(frames * np.hanning(512), axis=1)) ** 2
        mean = np.log(power.mean(axis=0) + 1e-9)
        return mean - mean.mean()

    male, female = spectrum("en+m1"), spectrum("en-us+f2")
    assert np.abs(male - female).mean() > 0.5
    again = spectrum("en+m1")
    assert np.abs(male - again).mean() < np.abs(male - female).mean() / 3


def test_the_same_utterance_is_the_same_samples_whatever_came_before(synth: Synthesizer) -> None:
    first, _ = synth.speak("pick up the small red ball", "en-us+f2", 160, 40)
    for voice in ("en+m1", "en-us+klatt3", "en-gb-x-rp+f3"):
        synth.speak("close the window now", voice, 190, 60)  # espeak-ng would carry state from these
    other = Synthesizer()  # instances share the library
    again, _ = other.speak("pick up the small red ball", "en-us+f2", 160, 40)
    assert np.array_equal(first, again)


def test_voices_lists_english(synth: Synthesizer) -> None:
    assert {"en", "en-us", "en-gb-x-rp"} <= set(synth.voices())
    assert {"m1", "f2", "klatt3"} <= set(synth.variants())


@pytest.mark.parametrize("voice", ["xx-nowhere", "en+nosuchvariant", "en+M3"])
def test_unknown_voice_is_a_value_error(synth: Synthesizer, voice: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(voice))) as caught:
        synth.speak("hello", voice)
    assert "en-us" in str(caught.value) and "m1" in str(caught.value)


def test_missing_library_is_a_runtime_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import espeakng_loader

    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(tmp_path / "libnothing.so"))
    monkeypatch.setattr(synthesizer, "_LOADED", [])  # as in a process that has not loaded it yet
    with pytest.raises(RuntimeError, match="cannot load espeak-ng"):
        Synthesizer()
