import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken import audio
from harken.importers.librispeech import LibriSpeechConfig, find_subsets, prepare

from conftest import DATA

SPEECH = audio.to_pcm16(audio.read(DATA / "LDC93S1.wav", 16000))


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def stamps(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in sorted(folder.rglob("*")) if path.is_file()}


def _chapter(subset: Path, speaker: int, chapter: int, lines: dict[int, str], seconds: float = 1.0) -> None:
    folder = subset / str(speaker) / str(chapter)
    folder.mkdir(parents=True)
    text = ""
    for utt, transcript in lines.items():
        uid = f"{speaker}-{chapter}-{utt:04d}"
        if transcript != "NO AUDIO":
            start = utt * 1600
            soundfile.write(folder / f"{uid}.flac", SPEECH[start : start + int(seconds * 16000)], 16000)
        text += f"{uid} {transcript}\n"
    (folder / f"{speaker}-{chapter}.trans.txt").write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An extracted LibriSpeech tree: LibriSpeech/<subset>/<speaker>/<chapter>/*.flac + *.trans.txt."""
    root = tmp_path_factory.mktemp("ls") / "LibriSpeech"
    _chapter(root / "dev-clean", 84, 121123, {0: "SHE HAD YOUR DARK SUIT", 1: "IN GREASY WASH WATER"})
    _chapter(root / "dev-clean", 174, 50561, {0: "ALL YEAR", 1: "NO AUDIO", 2: "IT'S A"})
    _chapter(root / "train-clean-100", 19, 198, {0: "DON'T ASK ME TO CARRY AN OILY RAG LIKE THAT"}, 1.5)
    (root / "README.TXT").write_text("LibriSpeech ASR corpus\n")
    return root


def test_import(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    csvs = prepare(tree, out, LibriSpeechConfig(jobs=1), progress=False)
    assert csvs == [out / "librivox-dev-clean.csv", out / "librivox-train-clean-100.csv"]
    dev, train = (rows(path) for path in csvs)
    assert [(r["wav_filename"], r["transcript"]) for r in dev] == [
        ("dev-clean/174-50561-0000.wav", "all year"),
        ("dev-clean/174-50561-0002.wav", "it's a"),
        ("dev-clean/84-121123-0000.wav", "she had your dark suit"),
        ("dev-clean/84-121123-0001.wav", "in greasy wash water"),
    ]
    assert [r["transcript"] for r in train] == ["don't ask me to carry an oily rag like that"]
    data, rate = soundfile.read(out / "dev-clean/84-121123-0001.wav", dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(data, SPEECH[1600:17600])  # flac -> wav is lossless
    report = capsys.readouterr().out
    assert "librispeech: kept 5 of 6 utterances" in report and "skipped 1: missing file" in report
    assert "174-50561-0001.flac" in report


def test_second_run_is_a_no_op(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(tree, out, LibriSpeechConfig(jobs=1), progress=False)
    before = stamps(out)
    prepare(tree, out, LibriSpeechConfig(jobs=1), progress=False)
    assert stamps(out) == before


def test_subsets_and_subset_folder(tree: Path, tmp_path: Path) -> None:
    assert list(find_subsets(tree.parent)) == ["dev-clean", "train-clean-100"]
    chosen = prepare(
        tree, tmp_path / "a", LibriSpeechConfig(jobs=1, subsets=("train-clean-100",)), progress=False
    )
    assert chosen == [tmp_path / "a/librivox-train-clean-100.csv"]
    (one,) = prepare(tree / "dev-clean", tmp_path / "b", LibriSpeechConfig(jobs=1), progress=False)
    assert one.name == "librivox-dev-clean.csv" and len(rows(one)) == 4
    with pytest.raises(ValueError, match="no subset test-other .*found dev-clean, train-clean-100"):
        prepare(tree, tmp_path / "c", LibriSpeechConfig(subsets=("test-other",)), progress=False)


def test_not_librispeech(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.flac").write_bytes(b"")
    with pytest.raises(ValueError, match="no \\*.trans.txt files"):
        prepare(tmp_path / "src", tmp_path / "out", progress=False)
