import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken import audio, cli, data, manifest, shards, storage
from harken.alphabet import Alphabet
from harken.config import DataConfig, FeatureConfig

from conftest import DATA, LDC93S1_TEXT


def _corpus(tmp_path: Path) -> Path:
    """Three recordings (wav, flac, 44.1 kHz stereo) and their CSV."""
    speech = audio.read(DATA / "LDC93S1.wav", 16000)
    audio.write(tmp_path / "b.wav", speech[:20000], 16000)
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


def test_index_files_spare_reading_audio_and_stale_ones_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = _corpus(tmp_path)
    cli.main(["shard", "--from", str(csv), "--output", str(tmp_path / "s")])
    tar = tmp_path / "s" / "shard-00000.tar"
    index = json.loads((tmp_path / "s" / "shard-00000.tar.json").read_text())
    assert index["tar_size"] == tar.stat().st_size and len(index["members"]) == 8  # 4 recordings + 4 texts
    member = tar.parent / "shard-00000.tar#00000002.flac"
    expected = audio.info(tmp_path / "c.flac")
    assert index["members"]["00000002.flac"][2:] == [16000, 1, 30000]
    with monkeypatch.context() as patched:  # the header comes from the index: no audio is opened
        patched.setattr(soundfile, "SoundFile", lambda source: pytest.fail(f"{source} was opened"))
        assert audio.info(member) == expected
    (tmp_path / "s" / "shard-00000.tar.json").write_text('{"format": "harken-shard-index/1", "tar_size": 1}')
    shards.forget_indexes()  # a fresh process: the index describes another tar, so the tar's headers are read
    assert audio.info(member) == expected and audio.exists(member)
    (tmp_path / "s" / "shard-00000.tar.json").write_text(
        json.dumps({**index, "members": {**index["members"], "00000002.flac": ["512", 30000]}})
    )  # an entry of the wrong type: the index is not used
    shards.forget_indexes()
    assert audio.info(member) == expected
    (tmp_path / "s" / "shard-00000.tar.json").write_text("{not json")
    shards.forget_indexes()
    np.testing.assert_array_equal(audio.read(member, 16000), audio.read(tmp_path / "c.flac", 16000))


@pytest.fixture(scope="module")
def bucket() -> Iterator[str]:
    """An S3 service on localhost (moto's server: the same HTTP API), with an empty bucket; its URL."""
    import boto3
    import fsspec
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, **credentials).create_bucket(Bucket="corpus")
    previous = fsspec.config.conf.get("s3")
    fsspec.config.conf["s3"] = {"endpoint_url": endpoint, "key": "test", "secret": "test"}  # what
    # FSSPEC_S3_ENDPOINT_URL and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY give a user's process
    yield endpoint
    fsspec.config.conf.pop("s3")
    if previous is not None:
        fsspec.config.conf["s3"] = previous
    server.stop()


def _upload(endpoint: str, folder: Path, prefix: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")  # fmt: skip
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), "corpus", f"{prefix}/{path.name}")


def test_training_from_shards_in_object_storage(
    tmp_path: Path, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shards folder copied to an S3 bucket trains from its CSV's URL, in loader worker processes too,
    and the feature cache works for its members; a member in a tar without an index file is found too."""
    csv = _corpus(tmp_path)
    cli.main(["shard", "--from", str(csv), "--output", str(tmp_path / "s"), "--shard_size", "3"])
    _upload(bucket, tmp_path / "s", "shards")
    remote = manifest.read_csv("s3://corpus/shards/corpus.csv")
    assert storage.remote_url(remote[2].path) == "s3://corpus/shards/shard-00000.tar#00000002.flac"
    for local, packed in zip(manifest.read_csv(tmp_path / "s" / "corpus.csv"), remote, strict=True):
        np.testing.assert_array_equal(audio.read(packed.path, 16000), audio.read(local.path, 16000))
        assert audio.info(packed.path) == audio.info(local.path)
    (tmp_path / "s" / "shard-00001.tar.json").unlink()
    _upload(bucket, tmp_path / "s", "no-index")  # without shard-00001's index file: its headers are read
    (tmp_path / "s" / "corpus.csv").unlink()
    shards.forget_indexes()
    member = Path("s3://corpus/no-index/shard-00001.tar#00000003.wav")
    assert audio.exists(member) and audio.info(member).sample_rate == 44100
    argv = ["train", "--train_files", "s3://corpus/shards/corpus.csv", "--epochs", "2", "--n_hidden", "16",
            "--num_workers", "2", "--feature_cache", str(tmp_path / "cache"), "--noshow_progressbar",
            "--checkpoint_dir", str(tmp_path / "ckpt")]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "4 samples (0.00 h) kept" in out, out
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 4  # one entry per member
    missing = ["train", *argv[1:3], "--epochs", "1"]
    missing[2] = "s3://corpus/nothing/train.csv"
    assert cli.main([*missing, "--checkpoint_dir", str(tmp_path / "c2")]) == 2
    err = capsys.readouterr().err
    assert "s3://corpus/nothing/train.csv: no such CSV file" in err and err.count("\n") == 1


def test_member_paths_and_index_files() -> None:
    assert shards.split_member(Path("a/shard-00000.tar#00000001.wav")) == (
        Path("a/shard-00000.tar"),
        "00000001.wav",
    )
    assert shards.split_member(Path("a/b.wav")) is None
    index = {"format": shards.INDEX_FORMAT, "tar_size": 100, "members": {"a.wav": [512, 10, 16000, 1, 5]}}
    members = shards.parse_index(json.dumps(index).encode(), 100)
    assert members == {"a.wav": shards.Member(512, 10, audio.AudioInfo(16000, 1, 5))}
    assert shards.parse_index(json.dumps(index).encode(), 101) is None  # another version of the tar
    assert shards.parse_index(b"{not json", 100) is None
