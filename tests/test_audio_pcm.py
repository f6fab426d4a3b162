import numpy as np

from harken import audio


def test_pcm16_round_trip_at_deepspeech_s_scale() -> None:
    pcm = np.array([0, 1000, -32768, 32767], dtype=np.int16)
    floats = audio.from_pcm16(pcm.tobytes())
    assert floats.dtype == np.float32 and floats[2] == -1.0 and floats[1] == 1000 / 32768
    np.testing.assert_array_equal(audio.from_pcm16(pcm), floats)  # bytes or an int16 array
    np.testing.assert_array_equal(audio.to_pcm16(floats), pcm)


def test_to_pcm16_rounds_and_clips() -> None:
    floats = np.array([1.5, -1.5, 1.0, 0.4 / 32768, 0.6 / 32768], dtype=np.float32)
    np.testing.assert_array_equal(audio.to_pcm16(floats), [32767, -32768, 32767, 0, 1])


def test_fit_length_cuts_or_pads_with_zeros() -> None:
    samples = np.arange(1, 6, dtype=np.float64)
    np.testing.assert_array_equal(audio.fit_length(samples, 3), [1, 2, 3])
    padded = audio.fit_length(samples, 7)
    assert padded.dtype == np.float32
    np.testing.assert_array_equal(padded, [1, 2, 3, 4, 5, 0, 0])
