import tarfile
from pathlib import Path

import numpy as np
import pytest

from harken import audio, cli, data, manifest
from harken.alphabet import Alphabet
from harken.config import DataConfig, FeatureConfig

from conftest import DATA, LDC93S1_TEXT


def _corpus(tmp_path: Path) -> Path:
    """Three recordings (wav, flac, 44.1 kHz stereo) and their CSV."""
    speech = audio.read(DATA / "LDC93S1.wav", 16000)
    audio.write(tmp_path / "b.wav", speech[:20000], 16000)
    import soundfile

    soundfile.write(str(tmp_path / "c.flac"), speech[:30000], 16000)
    csv = tmp_path / "corpus.csv"
    csv.write_text(
        "wav_filename,wav_filesize,transcript\n"
        f"{DATA / 'LDC93S1.wav'},0,{LDC93S1_TEXT}\nb.wav,0,she had your\n"
        f"c.flac,0,she had your dark\n{DATA / 'LDC93S1_pcms16le_2_44100.wav'},0,{LDC93S1_TEXT}\n"
    )
    return csv


def test_shards_train_like_the_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _corpus(tmp_path)
    assert (
        cli.main(["shard", "--from", str(csv), "--output", str(tmp_path / "shards"), "--shard_size", "3"])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.tar")) == [
        "shard-00000.tar",
        "shard-00001.tar",
    ]
    with tarfile.open(tmp_path / "shards" / "shard-00000.tar") as tar:  # WebDataset's layout
        assert tar.getnames() == ["00000000.wav", "00000000.txt", "00000001.wav", "00000001.txt",
                                  "00000002.flac", "00000002.txt"]  # fmt: skip
    sharded = manifest.read_csv(tmp_path / "shards" / "corpus.csv")
    assert (
        (tmp_path / "shards" / "corpus.csv")
        .read_text()
        .splitlines()[1]
        .startswith("shard-00000.tar#00000000.wav,")
    )
    originals = manifest.read_csv(csv)
    for original, packed in zip(originals, sharded, strict=True):
        assert packed.transcript == original.transcript
        np.testing.assert_array_equal(audio.read(packed.path, 16000), audio.read(original.path, 16000))
        assert audio.info(packed.path) == audio.info(original.path)
    config = DataConfig(train_files=str(tmp_path / "shards" / "corpus.csv"), num_workers=0)
    split = data.load_split("train", config, Alphabet.default(), FeatureConfig(), lambda _: None)
    assert len(split.samples) == 4 and split.dataset[0].features.shape[1] == 26


def test_missing_members_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _corpus(tmp_path)
    cli.main(["shard", "--from", str(csv), "--output", str(tmp_path / "s")])
    bad = tmp_path / "s" / "shard-00000.tar#nothing.wav"
    assert not audio.exists(bad) and audio.exists(tmp_path / "s" / "shard-00000.tar#00000001.wav")
    with pytest.raises(audio.AudioError, match="nothing.wav: no such file in the tar"):
        audio.read(bad, 16000)
    with pytest.raises(audio.AudioError, match="no such file in the tar"):
        audio.read(tmp_path / "none.tar#a.wav", 16000)
    report = manifest.validate([manifest.Sample(bad, 0, "x")], Alphabet.default(), FeatureConfig())
    assert report.kept == [] and report.rejected[0][1] == manifest.MISSING
    listing = tmp_path / "gone.csv"
    listing.write_text("wav_filename,wav_filesize,transcript\nnone.wav,0,x\n")
    assert cli.main(["shard", "--from", str(listing), "--output", str(tmp_path / "t")]) == 2
    assert "none.wav: no such file" in capsys.readouterr().err
