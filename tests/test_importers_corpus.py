import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken import audio
from harken.alphabet import Alphabet
from harken.importers.corpus import (
    EMPTY_TRANSCRIPT,
    OUT_OF_ALPHABET,
    UNSPOKEN,
    ImportConfig,
    LabelFilter,
    Skip,
    Utterance,
    check_source,
    clean_label,
    run,
    too_short,
)

from conftest import DATA

SPEECH = audio.read(
    DATA / "LDC93S1.wav", 16000
)  # 2.92 s: "she had your dark suit in greasy wash water all year"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def stamps(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(
    ("text", "label"),
    [
        (
            "She had your dark suit in greasy wash water all year.",
            "she had your dark suit in greasy wash water all year",
        ),
        ("  Hello,   World!  ", "hello world"),
        ("Don’t stop", "don't stop"),  # typographic apostrophe
        ("well-known — mostly_true", "well known mostly true"),
        ('"Quoted," she said…', "quoted she said"),
        ("¿Qué pasa?", "qué pasa"),
        ("Cafe\u0301", "café"),  # composed (NFC) unless --normalize
    ],
)
def test_clean_label(text: str, label: str) -> None:
    assert clean_label(text) == label


def test_clean_label_normalize_to_ascii() -> None:
    assert clean_label("Café naïve Ærø", to_ascii=True) == "cafe naive r"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I have 3 cats", UNSPOKEN),
        ("salt & pepper", UNSPOKEN),
        ("<unk> word", UNSPOKEN),
        ("...", EMPTY_TRANSCRIPT),
    ],
)
def test_clean_label_rejects(text: str, reason: str) -> None:
    with pytest.raises(Skip) as caught:
        clean_label(text)
    assert caught.value.reason == reason


def test_label_filter_alphabet() -> None:
    keep = LabelFilter(alphabet=Alphabet.default())
    assert keep("It's fine.") == "it's fine"
    with pytest.raises(Skip) as caught:
        keep("Café")
    assert caught.value.reason == OUT_OF_ALPHABET and "é" in caught.value.detail
    assert LabelFilter(to_ascii=True, alphabet=Alphabet.default())("Café") == "cafe"


def test_too_short_is_deepspeechs_rule() -> None:
    # 1 s at 16 kHz is 50 steps of 20 ms: 50 characters fit, 51 do not.
    assert not too_short(16000, 16000, "x" * 50)
    assert too_short(16000, 16000, "x" * 51)
    assert too_short(15999, 16000, "x" * 50)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sample_rate": 100}, "--sample_rate"),
        ({"max_duration": -1}, "--max_duration"),
        ({"jobs": -2}, "--jobs"),
    ],
)
def test_config_checks(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImportConfig(**options)  # type: ignore[arg-type]


def test_check_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing: no such folder"):
        check_source(tmp_path / "nothing", "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file: not a folder"):
        check_source(tmp_path / "file", "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: the folder is empty"):
        check_source(tmp_path / "empty", "x")


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    audio.write(folder / "plain.wav", SPEECH, 16000)  # usable in place
    soundfile.write(folder / "stereo.flac", np.stack([SPEECH, SPEECH], axis=1), 16000)
    audio.write(folder / "short.wav", SPEECH[:1600], 16000)  # 0.1 s
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    return folder


def _utterances(src: Path, out: Path) -> list[Utterance]:
    wav = out / "wav"
    return [
        Utterance("a.csv", src / "plain.wav", wav / "plain.wav", "Plain speech.", as_is=True),
        Utterance("a.csv", src / "stereo.flac", wav / "stereo.wav", "Stereo speech"),
        Utterance("b.csv", src / "stereo.flac", wav / "stereo-part.wav", "Part", span=(0.5, 1.5)),
        Utterance(
            "b.csv", src / "short.wav", wav / "short.wav", "a transcript far too long for a tenth of a second"
        ),
        Utterance("b.csv", src / "corrupt.wav", wav / "corrupt.wav", "corrupt"),
        Utterance("b.csv", src / "absent.wav", wav / "absent.wav", "absent"),
        Utterance("b.csv", src / "plain.wav", wav / "never.wav", "Seven 7"),
        Utterance("b.csv", src / "stereo.flac", wav / "late.wav", "late", span=(5.0, 6.0)),
    ]


def test_run_converts_checks_and_reports(
    sources: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    csvs = run(
        "test", _utterances(sources, out), out, ["a.csv", "b.csv", "c.csv"], ImportConfig(jobs=1), False
    )
    assert csvs == [out / "a.csv", out / "b.csv", out / "c.csv"]
    a, b, c = (rows(path) for path in csvs)
    assert [row["transcript"] for row in a] == ["plain speech", "stereo speech"]
    assert Path(a[0]["wav_filename"]) == sources / "plain.wav"  # in place: absolute, outside the target
    assert a[1]["wav_filename"] == "wav/stereo.wav" and int(a[1]["wav_filesize"]) == os.path.getsize(
        out / "wav/stereo.wav"
    )
    assert [row["transcript"] for row in b] == ["part"] and c == []
    data, rate = soundfile.read(out / "wav/stereo.wav", dtype="int16")
    assert rate == 16000 and data.ndim == 1 and len(data) == len(SPEECH)
    np.testing.assert_array_equal(data, audio.to_pcm16(SPEECH))  # a lossless round trip
    part, _ = soundfile.read(out / "wav/stereo-part.wav", dtype="int16")
    np.testing.assert_array_equal(part, audio.to_pcm16(SPEECH[8000:24000]))
    report = capsys.readouterr().out
    assert "test: kept 3 of 8 utterances, 6.8 s of audio (a.csv 2, b.csv 1)" in report
    assert "wavs: 3 converted, 1 used in place" in report
    for line in (
        "skipped 1: audio too short for its transcript",
        "short.wav: 5 steps of 20 ms for 49 characters",
        "skipped 1: unreadable audio",
        "skipped 1: missing file",
        "skipped 1: digits or symbols in the transcript",
        "skipped 1: no audio samples",
        "stereo.flac 5.0-6.0 s: the time span holds no audio",
    ):
        assert line in report, line
    assert not (out / "wav/corrupt.wav").exists()


def test_second_run_is_a_no_op(sources: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    utterances = _utterances(sources, out)
    run("test", utterances, out, ["a.csv", "b.csv"], ImportConfig(jobs=1), False)
    before = stamps(out)
    (out / "wav" / ".stereo.wav.abc123.tmp").write_bytes(b"left by a killed run")
    capsys.readouterr()
    run("test", utterances, out, ["a.csv", "b.csv"], ImportConfig(jobs=1), False)
    assert stamps(out) == before  # nothing rewritten, the stale temporary file removed
    assert "wavs: 3 kept from an earlier run, 1 used in place" in capsys.readouterr().out


def test_lost_or_other_rate_wavs_are_converted_again(sources: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    utterances = _utterances(sources, out)
    run("test", utterances, out, ["a.csv", "b.csv"], ImportConfig(jobs=1), False)
    (out / "wav/stereo.wav").unlink()
    audio.write(out / "wav/stereo-part.wav", SPEECH[:8000], 8000)  # as if imported at another rate
    run("test", utterances, out, ["a.csv", "b.csv"], ImportConfig(jobs=1), False)
    assert soundfile.info(out / "wav/stereo.wav").frames == len(SPEECH)
    assert soundfile.info(out / "wav/stereo-part.wav").samplerate == 16000
    run("test", utterances, out, ["a.csv", "b.csv"], ImportConfig(jobs=1, sample_rate=8000), False)
    converted = rows(out / "a.csv")[0]["wav_filename"]
    assert (
        converted == "wav/plain.wav" and soundfile.info(out / converted).samplerate == 8000
    )  # no longer in place


def test_processes_give_the_same_result(sources: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    run("test", _utterances(sources, one), one, ["a.csv", "b.csv"], ImportConfig(jobs=1), False)
    run("test", _utterances(sources, two), two, ["a.csv", "b.csv"], ImportConfig(jobs=2), False)
    for name in ("a.csv", "b.csv"):
        assert (one / name).read_text() == (two / name).read_text()
    assert (one / "wav/stereo-part.wav").read_bytes() == (two / "wav/stereo-part.wav").read_bytes()


def test_max_duration_and_filter_alphabet(
    sources: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    alphabet = tmp_path / "abc.txt"
    alphabet.write_text(" \na\nb\nc\nd\ne\nh\ni\nl\nn\no\np\nr\ns\nt\n", encoding="utf-8")
    config = ImportConfig(jobs=1, max_duration=2.0, filter_alphabet=alphabet)
    run("test", _utterances(sources, out), out, ["a.csv", "b.csv"], config, False)
    assert rows(out / "a.csv") == [] and [r["transcript"] for r in rows(out / "b.csv")] == ["part"]
    report = capsys.readouterr().out
    assert "skipped 2: audio longer than --max_duration" in report and "2.9 s > 2 s" in report
    assert "skipped 2: characters outside the alphabet" in report and "'fg'" in report and "'u'" in report
