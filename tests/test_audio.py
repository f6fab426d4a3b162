from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken import audio

DATA = Path(__file__).parent / "data"


def test_reads_pcm16_as_deepspeech_scaled_floats() -> None:
    samples = audio.read(DATA / "LDC93S1.wav", 16000)
    raw, rate = soundfile.read(str(DATA / "LDC93S1.wav"), dtype="int16")
    assert rate == 16000 and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, raw.astype(np.float32) / 32768.0)


@pytest.mark.parametrize("name", ["LDC93S1_pcms16le_1_8000.wav", "LDC93S1_pcms16le_2_44100.wav"])
def test_other_rates_and_channels_are_converted(name: str) -> None:
    reference = audio.read(DATA / "LDC93S1.wav", 16000)
    converted = audio.read(DATA / name, 16000)
    assert converted.ndim == 1
    assert abs(len(converted) - len(reference)) <= 16  # within 1 ms
    n = min(len(converted), len(reference))
    # The 8 kHz file lost everything above 4 kHz, so compare the waveforms loosely.
    assert np.corrcoef(converted[:n], reference[:n])[0, 1] > 0.9


def test_info() -> None:
    meta = audio.info(DATA / "LDC93S1_pcms16le_2_44100.wav")
    assert (meta.sample_rate, meta.channels) == (44100, 2)
    assert meta.duration == pytest.approx(2.92, abs=0.01)


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(audio.AudioError, match="nothing.wav: no such file"):
        audio.read(tmp_path / "nothing.wav", 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(audio.AudioError, match="corrupt.wav: not a readable audio file"):
        audio.read(corrupt, 16000)
    with pytest.raises(audio.AudioError, match="corrupt.wav"):
        audio.info(corrupt)
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros(0, dtype=np.int16), 16000)
    with pytest.raises(audio.AudioError, match="empty.wav: the file holds no audio"):
        audio.read(empty, 16000)


def test_pcm16_helpers(tmp_path: Path) -> None:
    pcm = np.array([0, 1000, -32768, 32767], dtype=np.int16)
    floats = audio.from_pcm16(pcm.tobytes())
    np.testing.assert_array_equal(audio.to_pcm16(floats), pcm)
    path = tmp_path / "x.wav"
    audio.write(path, floats, 16000)
    np.testing.assert_array_equal(audio.read(path, 16000), floats)
