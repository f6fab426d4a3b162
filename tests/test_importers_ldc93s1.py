import csv
import shutil
from pathlib import Path

import pytest
import soundfile

from harken import cli
from harken.importers.ldc93s1 import LDC93S1Config, prepare, read_transcript

from conftest import DATA, LDC93S1_TEXT


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "ldc"
    folder.mkdir()
    for name in ("LDC93S1.wav", "LDC93S1.txt"):
        shutil.copy(DATA / name, folder / name)
    return folder


def test_import_uses_the_wav_in_place(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (csv_path,) = prepare(source, tmp_path / "out", LDC93S1Config(jobs=1), progress=False)
    assert csv_path == tmp_path / "out" / "ldc93s1.csv"
    assert rows(csv_path) == [
        {"wav_filename": str(source / "LDC93S1.wav"), "wav_filesize": "93638", "transcript": LDC93S1_TEXT}
    ]
    assert "ldc93s1: kept 1 of 1 utterances, 2.9 s of audio" in capsys.readouterr().out


def test_import_converts_for_another_rate(source: Path, tmp_path: Path) -> None:
    (csv_path,) = prepare(source, tmp_path / "out", LDC93S1Config(jobs=1, sample_rate=8000), progress=False)
    (row,) = rows(csv_path)
    assert row["wav_filename"] == "LDC93S1.wav" and row["transcript"] == LDC93S1_TEXT
    assert soundfile.info(tmp_path / "out" / "LDC93S1.wav").samplerate == 8000


def test_read_transcript(tmp_path: Path) -> None:
    assert read_transcript(DATA / "LDC93S1.txt") == "She had your dark suit in greasy wash water all year."
    plain = tmp_path / "plain.txt"
    plain.write_text("no offsets here\n")
    assert read_transcript(plain) == "no offsets here"


def test_missing_transcript(source: Path, tmp_path: Path) -> None:
    (source / "LDC93S1.txt").unlink()
    with pytest.raises(ValueError, match="LDC93S1.txt: no such file"):
        prepare(source, tmp_path / "out", progress=False)


def test_command(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["import", "ldc93s1", str(source), str(tmp_path / "out"), "--noprogress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == str(tmp_path / "out" / "ldc93s1.csv")
    assert cli.main(argv) == 0  # again: a no-op
    assert cli.main([*argv, "--filter_alphabet", str(DATA / "alphabet.txt"), "--sample_rate", "8000"]) == 0
    assert rows(tmp_path / "out" / "ldc93s1.csv")[0]["wav_filename"] == "LDC93S1.wav"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["import", "ldc93s1", "/nonexistent/ldc", "out"], "/nonexistent/ldc: no such folder"),
        (
            ["import", "ldc93s1", str(DATA), "out", "--sample_rate", "100"],
            "--sample_rate 100: must be 8000 to 192000 Hz",
        ),
        (["import", "ldc93s1", str(DATA), "out", "--filter_alphabet", "nope.txt"], "nope.txt: cannot read"),
    ],
)
def test_command_errors_are_one_line(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("harken: error: ") and message in err and err.count("\n") == 1
