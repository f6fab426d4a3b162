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


def test_write_gives_back_what_read_reads(tmp_path: Path) -> None:
    floats = audio.from_pcm16(np.array([0, 1000, -32768, 32767], dtype=np.int16))
    path = tmp_path / "new" / "x.wav"  # the folder is made
    audio.write(path, floats, 16000)
    np.testing.assert_array_equal(audio.read(path, 16000), floats)
    meta = soundfile.info(str(path))
    assert (meta.format, meta.subtype, meta.channels, meta.samplerate) == ("WAV", "PCM_16", 1, 16000)
    assert audio.wav_frames(path, 16000) == 4 and audio.wav_frames(path, 8000) == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.wav"]  # no temporary file left


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    audio.write(path, np.zeros(100, np.float32), 16000)
    with pytest.raises(TypeError):
        audio.write(path, "not samples", 16000)  # type: ignore[arg-type]
    assert audio.wav_frames(path, 16000) == 100 and [p.name for p in tmp_path.iterdir()] == ["x.wav"]


def test_wav_frames_of_anything_else_is_0(tmp_path: Path) -> None:
    samples, rate = soundfile.read(str(DATA / "LDC93S1.wav"), dtype="int16")
    flac, stereo = tmp_path / "x.flac", tmp_path / "stereo.wav"
    soundfile.write(str(flac), samples, rate)
    soundfile.write(str(stereo), np.stack([samples, samples], axis=1), rate)
    assert audio.wav_frames(DATA / "LDC93S1.wav", 16000) == len(samples)
    assert audio.wav_frames(flac, 16000) == audio.wav_frames(stereo, 16000) == 0
    assert audio.wav_frames(tmp_path / "absent.wav", 16000) == 0


def _cut(source: Path, target: Path, fraction: float) -> Path:
    """The first ``fraction`` of ``source``'s bytes, as a download or a copy stopped early leaves them."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


@pytest.mark.parametrize(
    ("suffix", "options"),
    [("wav", {}), ("aiff", {}), ("au", {}), ("w64", {}), ("wav", {"subtype": "FLOAT"})],
)
def test_a_truncated_file_is_read_as_far_as_it_goes_with_a_warning(
    suffix: str, options: dict[str, str], tmp_path: Path
) -> None:
    """libsndfile shortens these formats' length to the bytes present without a word: the header says."""
    samples, rate = soundfile.read(str(DATA / "LDC93S1.wav"), dtype="int16")
    whole = tmp_path / f"whole.{suffix}"
    soundfile.write(str(whole), samples, rate, **options)
    warnings: list[str] = []
    assert len(audio.read(whole, 16000, warn=warnings.append)) == len(samples) and warnings == []
    cut = _cut(whole, tmp_path / f"cut.{suffix}", 1 / 3)
    read = audio.read(cut, 16000, warn=warnings.append)
    assert 0.3 < len(read) / len(samples) < 0.34
    (warning,) = warnings
    assert (
        warning == f"{cut}: truncated: the header announces 2.92 s, the file holds {len(read) / rate:.2f} s"
    )
    np.testing.assert_array_equal(audio.read(cut, 16000), read)  # without warn: as before, quietly


def test_the_first_2000_bytes_of_a_wav_file(tmp_path: Path) -> None:
    cut = tmp_path / "x.wav"
    cut.write_bytes((DATA / "LDC93S1.wav").read_bytes()[:2000])
    warnings: list[str] = []
    assert len(audio.read(cut, 16000, warn=warnings.append)) == (2000 - 44) // 2
    assert warnings == [f"{cut}: truncated: the header announces 2.92 s, the file holds 0.06 s"]


def test_a_stream_header_that_leaves_the_length_open_is_not_truncation(tmp_path: Path) -> None:
    data = bytearray((DATA / "LDC93S1.wav").read_bytes())
    at = data.index(b"data")
    data[4:8] = data[at + 4 : at + 8] = b"\xff\xff\xff\xff"  # what a writer to a pipe puts there
    stream = tmp_path / "stream.wav"
    stream.write_bytes(bytes(data))
    warnings: list[str] = []
    assert len(audio.read(stream, 16000, warn=warnings.append)) == 46797 and warnings == []


def test_damaged_compressed_files_keep_what_comes_before_the_damage(tmp_path: Path) -> None:
    samples, rate = soundfile.read(str(DATA / "LDC93S1.wav"), dtype="int16")
    flac, ogg = tmp_path / "whole.flac", tmp_path / "whole.ogg"
    soundfile.write(str(flac), samples, rate)
    soundfile.write(str(ogg), samples, rate)
    warnings: list[str] = []
    for whole in (flac, ogg):
        assert len(audio.read(whole, 16000, warn=warnings.append)) == len(samples)
    assert warnings == []
    cut = _cut(flac, tmp_path / "cut.flac", 2 / 3)
    read = audio.read(cut, 16000, warn=warnings.append)  # FLAC: the header's length, decoding stops early
    assert 0.4 < len(read) / len(samples) < 0.7
    np.testing.assert_array_equal(read, audio.read(flac, 16000)[: len(read)])
    (warning,) = warnings
    assert warning.startswith(f"{cut}: unreadable after {len(read) / rate:.2f} s of the 2.92 s its header")
    with pytest.raises(audio.AudioError, match="cut.flac: unreadable at"):
        audio.read(cut, 16000)  # without warn: an error, as before
    cut = _cut(ogg, tmp_path / "cut.ogg", 1 / 3)  # Ogg: libsndfile finds no length and decodes nothing
    with pytest.raises(audio.AudioError, match="cut.ogg: truncated or damaged .*ended unexpectedly"):
        audio.read(cut, 16000, warn=warnings.append)


def test_blocks_stop_where_a_truncated_file_does(tmp_path: Path) -> None:
    samples, rate = soundfile.read(str(DATA / "LDC93S1.wav"), dtype="int16")
    whole = tmp_path / "whole.flac"
    soundfile.write(str(whole), np.tile(samples, 3), rate)
    cut = _cut(whole, tmp_path / "cut.flac", 1 / 2)
    warnings: list[str] = []
    pieces = list(audio.blocks(cut, 16000, seconds=1.0, warn=warnings.append))
    held = sum(len(piece) for piece in pieces)
    assert 0.3 < held / (3 * len(samples)) < 0.6 and all(len(piece) > 0 for piece in pieces)
    (warning,) = warnings
    assert warning.startswith(f"{cut}: unreadable after {held / rate:.2f} s of the 8.77 s its header")
    whole_pieces = audio.blocks(whole, 16000, seconds=1.0, warn=warnings.append)
    assert sum(len(piece) for piece in whole_pieces) == 3 * len(samples) and len(warnings) == 1
