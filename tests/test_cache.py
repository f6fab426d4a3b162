import os
import shutil
from pathlib import Path

import pytest
import torch

from harken import audio, data
from harken.alphabet import Alphabet
from harken.cache import FeatureCache
from harken.config import DataConfig, FeatureConfig
from harken.manifest import Sample

from conftest import DATA, LDC93S1_TEXT


def _dataset(wav: Path, cache: Path, config: FeatureConfig | None = None) -> data.SpeechDataset:
    config = config or FeatureConfig()
    sample = Sample(wav, 0, LDC93S1_TEXT)
    return data.SpeechDataset([sample], Alphabet.default(), config, cache=FeatureCache(cache, config))


def test_second_read_comes_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = tmp_path / "a.wav"
    shutil.copy(DATA / "LDC93S1.wav", wav)
    first = _dataset(wav, tmp_path / "cache")[0]
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    monkeypatch.setattr(audio, "read", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read audio")))
    again = _dataset(wav, tmp_path / "cache")[0]
    assert torch.equal(first.features, again.features) and torch.equal(first.labels, again.labels)
    monkeypatch.undo()
    os.utime(wav, ns=(1, 1))  # a changed file is read again
    _dataset(wav, tmp_path / "cache")[0]
    other = FeatureConfig(n_mfcc=13)  # so are other settings
    assert _dataset(wav, tmp_path / "cache", other)[0].features.shape[1] == 13
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3


def test_damaged_entry_and_unwritable_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = DATA / "LDC93S1.wav"
    reference = _dataset(wav, tmp_path / "cache")[0].features
    (entry,) = (tmp_path / "cache").rglob("*.npy")
    entry.write_bytes(b"garbage")
    assert torch.equal(_dataset(wav, tmp_path / "cache")[0].features, reference)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    assert torch.equal(_dataset(wav, blocked)[0].features, reference)
    assert capsys.readouterr().out.count("warning: feature cache") == 1


def test_load_split_uses_the_cache_flag(tmp_path: Path) -> None:
    config = DataConfig(dev_files=str(DATA / "LDC93S1.csv"), feature_cache=str(tmp_path / "c"))
    split = data.load_split("dev", config, Alphabet.default(), FeatureConfig(), lambda _: None)
    assert split.dataset.cache is not None
    split.dataset[0]
    assert list((tmp_path / "c").rglob("*.npy"))
