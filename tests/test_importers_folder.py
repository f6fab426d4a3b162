import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken import audio, cli
from harken.importers.folder import FolderConfig, prepare, split_of

from conftest import DATA

SPEECH = audio.read(DATA / "LDC93S1.wav", 16000)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def stamps(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in sorted(folder.rglob("*")) if path.is_file()}


def _say(path: Path, text: str | None, write: bool = True, **sound: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if write:
        soundfile.write(path, SPEECH[:24000], 16000, **sound)
    if text is not None:
        path.with_suffix(".txt").write_text(text, encoding="utf-8")


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    root = tmp_path / "recordings"
    _say(root / "one.wav", "She had your dark suit.", subtype="PCM_16")  # usable as it is
    _say(root / "a" / "two.flac", "In greasy wash water")
    _say(root / "a" / "b" / "three.ogg", "All year!")
    _say(root / "mp3" / "four.mp3", None)  # no transcript
    _say(root / "five.flac", "five")
    _say(root / "five.wav", None, subtype="PCM_16")  # preferred over five.flac
    stereo = root / "six.wav"
    soundfile.write(stereo, np.stack([SPEECH, SPEECH], axis=1)[:30000], 44100, subtype="PCM_16")
    stereo.with_suffix(".txt").write_text("stereo at forty four kilohertz\n", encoding="utf-8")
    (root / "seven.wav").write_bytes(b"not audio at all")
    (root / "seven.txt").write_text("corrupt", encoding="utf-8")
    (root / "notes.txt").write_text("a stray text file", encoding="utf-8")
    return root


def test_import(recordings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    (csv_path,) = prepare(recordings, out, FolderConfig(jobs=1), progress=False)
    assert csv_path == out / "all.csv"
    got = {row["transcript"]: row["wav_filename"] for row in rows(csv_path)}
    assert got == {
        "in greasy wash water": "wav/a/two.wav",
        "all year": "wav/a/b/three.wav",
        "five": str(recordings / "five.wav"),
        "she had your dark suit": str(recordings / "one.wav"),
        "stereo at forty four kilohertz": "wav/six.wav",
    }
    data, rate = soundfile.read(out / "wav/six.wav")
    assert rate == 16000 and data.ndim == 1
    report = capsys.readouterr().out
    assert "folder: kept 5 of 8 utterances" in report and "wavs: 3 converted, 2 used in place" in report
    for line in (
        "skipped 1: no .txt transcript beside the audio file",
        "four.mp3",
        "skipped 1: another audio file has the same name",
        "five.flac: five.wav is used",
        "skipped 1: unreadable audio",
    ):
        assert line in report, line


def test_second_run_is_a_no_op_and_target_inside_source_is_left_out(recordings: Path) -> None:
    out = recordings / "csv"  # inside the source: its converted wavs must not be imported again
    prepare(recordings, out, FolderConfig(jobs=1), progress=False)
    before = stamps(out)
    prepare(recordings, out, FolderConfig(jobs=1), progress=False)
    assert stamps(out) == before
    assert len(rows(out / "all.csv")) == 5
    prepare(recordings, recordings, FolderConfig(jobs=1), progress=False)  # the folder itself as the target
    assert len(rows(recordings / "all.csv")) == 5


def test_split_is_deterministic_and_stable(recordings: Path, tmp_path: Path) -> None:
    config = FolderConfig(jobs=1, dev_fraction=0.3, test_fraction=0.3, seed=7)
    csvs = prepare(recordings, tmp_path / "a", config, progress=False)
    assert [path.name for path in csvs] == ["train.csv", "dev.csv", "test.csv"]
    first = {path.name: rows(path) for path in csvs}
    assert sum(len(split) for split in first.values()) == 5
    _say(recordings / "new" / "eight.flac", "a new recording")
    again = {path.name: rows(path) for path in prepare(recordings, tmp_path / "a", config, progress=False)}
    for name, split in first.items():
        assert all(row in again[name] for row in split)  # an added file moves nothing
    names = [f"f{i}.wav" for i in range(2000)]
    shares = [split_of(name, config) for name in names]
    assert (
        abs(shares.count("dev.csv") / 2000 - 0.3) < 0.05 and abs(shares.count("test.csv") / 2000 - 0.3) < 0.05
    )
    assert [
        path.name
        for path in prepare(recordings, tmp_path / "b", FolderConfig(jobs=1, dev_fraction=0.1), False)
    ] == [
        "train.csv",
        "dev.csv",
    ]


def test_bad_sources_and_options(tmp_path: Path) -> None:
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    with pytest.raises(ValueError, match="texts: no audio files"):
        prepare(tmp_path / "texts", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="--dev_fraction and --test_fraction"):
        FolderConfig(dev_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"--test_fraction -0.1: must be in \[0, 1\)"):
        FolderConfig(test_fraction=-0.1)


def test_command(recordings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["import", "folder", str(recordings), str(tmp_path / "out"), "--noprogress", "--jobs", "2"]
    assert cli.main([*argv, "--dev_fraction", "0.2", "--test_fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    assert [Path(line).name for line in out.splitlines()[-3:]] == ["train.csv", "dev.csv", "test.csv"]
    assert cli.main([*argv, "--dev_fraction", "2"]) == 2
    assert "--dev_fraction 2.0: must be in [0, 1)" in capsys.readouterr().err
