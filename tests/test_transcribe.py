from pathlib import Path

import numpy as np
import pytest
import torch

from harken import audio, features
from harken.config import FeatureConfig
from harken.inference import Model
from harken.transcribe import expand, transcribe_files

from conftest import DATA, LDC93S1_TEXT


def test_expand_files_folders_and_globs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.wav", "a.flac", "sub/c.mp3", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert expand([tmp_path]) == [tmp_path / "a.flac", tmp_path / "b.wav", tmp_path / "sub" / "c.mp3"]
    assert expand([str(tmp_path / "*.wav")]) == [tmp_path / "b.wav"]
    assert expand([tmp_path / "missing.wav"]) == [tmp_path / "missing.wav"]  # reported later, not dropped


@pytest.mark.slow
def test_other_rates_and_channel_counts_transcribe_like_the_original(ldc_model: Path, tmp_path: Path) -> None:
    """The model only ever heard the 16 kHz mono file; the 44.1 kHz stereo one must give the same text."""
    loaded = Model(ldc_model)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt garbage")
    names = ["LDC93S1.wav", "LDC93S1_pcms16le_2_44100.wav"]
    results = list(transcribe_files(loaded, [*(DATA / n for n in names), corrupt]))
    assert [r.text for r in results[:2]] == [LDC93S1_TEXT] * 2
    assert results[0].duration == pytest.approx(2.92, abs=0.01)
    assert "corrupt.wav: not a readable audio file" in results[2].error


def test_8khz_audio_is_upsampled_to_what_a_16khz_model_hears_of_it() -> None:
    """8 kHz audio has nothing above 4 kHz: after conversion its features must equal those of the 16 kHz
    original with that band removed (the same original taken down to 8 kHz and back), frame for frame."""
    original = audio.read(DATA / "LDC93S1.wav", 16000)
    band_limited = audio.resample(audio.resample(original, 16000, 8000), 8000, 16000)
    converted = audio.read(DATA / "LDC93S1_pcms16le_1_8000.wav", 16000)
    n = min(len(converted), len(band_limited))
    config = FeatureConfig()
    ours = features.mfcc(torch.from_numpy(converted[:n]), config)
    reference = features.mfcc(torch.from_numpy(band_limited[:n]), config)
    # Below 4 kHz the signals agree to the 8 kHz file's 16-bit quantisation.
    assert np.corrcoef(converted[:n], band_limited[:n])[0, 1] > 0.999
    assert (ours - reference)[:, :13].abs().median() < 0.5


def test_audio_shorter_than_a_window_is_a_per_file_error(tmp_path: Path) -> None:
    from harken.train import build, save

    from conftest import ldc_config

    save(build(ldc_config(tmp_path / "ckpt", epochs=1, n_hidden=8), log=lambda _: None))
    loaded = Model(tmp_path / "ckpt")
    short = tmp_path / "short.wav"
    audio.write(short, np.full(300, 0.1, dtype=np.float32), 16000)
    results = list(transcribe_files(loaded, [short, DATA / "LDC93S1.wav"]))
    assert results[0].error == f"{short}: shorter than one 32 ms feature window"
    assert not results[1].error and results[1].duration == pytest.approx(2.92, abs=0.01)
