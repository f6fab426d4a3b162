from pathlib import Path

import numpy as np
import pytest

from harken import audio

DATA = Path(__file__).parent / "data"


def test_the_same_rate_is_the_samples_as_float32() -> None:
    samples = np.array([0.0, 0.5, -0.25])
    out = audio.resample(samples, 16000, 16000)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, samples)


@pytest.mark.parametrize(("rate_in", "rate_out"), [(8000, 16000), (44100, 16000), (16000, 8000)])
def test_whole_array_conversion_keeps_length_and_sound(rate_in: int, rate_out: int) -> None:
    t = np.arange(rate_in) / rate_in  # 1 s of a 440 Hz tone, under both rates' Nyquist frequency
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = audio.resample(tone, rate_in, rate_out)
    assert len(out) == rate_out and out.dtype == np.float32
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate_out) / rate_out)
    np.testing.assert_allclose(out[100:-100], expected[100:-100], atol=0.01)  # edges: zero padding
    assert np.abs(audio.resample(np.ones(1000, np.float32) * 0.999, rate_in, rate_out)).max() <= 1.0


@pytest.mark.parametrize("rates", [(8000, 16000), (44100, 16000), (48000, 16000), (16000, 8000)])
def test_the_stream_resampler_equals_the_whole_file_conversion(rates: tuple[int, int]) -> None:
    samples = (np.random.default_rng(0).standard_normal(rates[0]) * 0.3).astype(np.float32)
    whole = audio.resample(samples, *rates)
    for size in (1, 441, 10_000):
        resampler = audio.Resampler(*rates)
        pieces = [resampler.feed(samples[i : i + size]) for i in range(0, len(samples), size)]
        np.testing.assert_allclose(np.concatenate([*pieces, resampler.finish()]), whole, atol=1e-6)


@pytest.mark.parametrize("rates", [(44100, 16000), (8000, 16000), (22050, 16000)])
def test_speech_fed_in_pieces_of_random_sizes_equals_the_whole_array_result(rates: tuple[int, int]) -> None:
    """As a live stream delivers it: pieces of any size, empty ones included."""
    speech = audio.read(DATA / "LDC93S1.wav", rates[0])
    whole = audio.resample(speech, *rates)
    rng = np.random.default_rng(7)
    resampler, pieces, at = audio.Resampler(*rates), [], 0
    while at < len(speech):
        size = int(rng.integers(0, 3000))
        pieces.append(resampler.feed(speech[at : at + size]))
        at += size
    joined = np.concatenate([*pieces, resampler.finish()])
    assert len(joined) == len(whole)
    np.testing.assert_allclose(joined, whole, atol=1e-6)
    assert all(piece.dtype == np.float32 for piece in pieces)
