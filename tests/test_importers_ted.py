import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken import audio
from harken.importers.corpus import Skip
from harken.importers.ted import UNKNOWN_WORD, TedConfig, clean_transcript, parse_stm, prepare

from conftest import DATA

SPEECH = audio.to_pcm16(audio.read(DATA / "LDC93S1.wav", 16000))  # 2.92 s


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def stamps(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in sorted(folder.rglob("*")) if path.is_file()}


def sphere(path: Path, samples: np.ndarray, big_endian: bool = False, coding: str = "pcm") -> None:
    """A NIST SPHERE file as TED-LIUM ships them: a 1024-byte text header, then 16-bit PCM."""
    fields = [
        "NIST_1A",
        "   1024",
        f"sample_count -i {len(samples)}",
        "sample_rate -i 16000",
        "channel_count -i 1",
        f"sample_byte_format -s2 {'10' if big_endian else '01'}",
        "sample_n_bytes -i 2",
        f"sample_coding -s{len(coding)} {coding}",
        "sample_sig_bits -i 16",
        "end_head",
    ]
    header = ("\n".join(fields) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.ljust(1024, b" ") + samples.astype(">i2" if big_endian else "<i2").tobytes())


def _split(root: Path, split: str, talk: str, lines: list[str], big_endian: bool = False) -> None:
    sphere(root / split / "sph" / f"{talk}.sph", SPEECH, big_endian)
    (root / split / "stm").mkdir(parents=True, exist_ok=True)
    (root / split / "stm" / f"{talk}.stm").write_text(
        "".join(f"{line}\n" for line in lines), encoding="utf-8"
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TED-LIUM release folder: <split>/sph/<talk>.sph and <split>/stm/<talk>.stm."""
    root = tmp_path_factory.mktemp("ted") / "TEDLIUM_release2"
    _split(
        root,
        "train",
        "AlGore_2009",
        [
            ";; a comment line",
            "AlGore_2009 1 AlGore_2009 0.0 1.2 <o,f0,male> she had your {NOISE} dark suit(2)",
            "AlGore_2009 1 inter_segment_gap 1.2 1.4 <o,,unknown> ignore_time_segment_in_scoring",
            "AlGore_2009 1 AlGore_2009 1.40 2.5 <o,f0,male> in greasy <unk> water",
            "AlGore_2009 1 AlGore_2009 2.5 2.9 <o,f0,male> it 's all year and more words than fit here",
            "AlGore_2009 1 AlGore_2009 5.0 6.0 <o,f0,male> after the end",
        ],
        big_endian=True,
    )
    _split(
        root,
        "dev",
        "BillGates_2010",
        ["BillGates_2010 1 BillGates_2010 0.5 2.0 <o,f0,male> wash water all year"],
    )
    _split(root, "test", "Coder_2011", ["Coder_2011 1 Coder_2011 1.0 2.0 <o,f0,female> we 're {BREATH} here"])
    return root


def test_sphere_is_read_as_written(release: Path) -> None:
    data, rate = soundfile.read(release / "train/sph/AlGore_2009.sph", dtype="int16")  # big-endian
    assert rate == 16000
    np.testing.assert_array_equal(data, SPEECH)
    written = release.parent / "written.sph"
    soundfile.write(written, SPEECH, 16000, format="NIST", subtype="PCM_16")
    np.testing.assert_array_equal(soundfile.read(written, dtype="int16")[0], SPEECH)


def test_import(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    csvs = prepare(release, out, TedConfig(jobs=1), progress=False)
    assert csvs == [out / "ted-train.csv", out / "ted-dev.csv", out / "ted-test.csv"]
    train, dev, test = (rows(path) for path in csvs)
    assert [(r["wav_filename"], r["transcript"]) for r in train] == [
        ("train/AlGore_2009-0.0-1.2.wav", "she had your dark suit")
    ]
    assert [(r["wav_filename"], r["transcript"]) for r in dev] == [
        ("dev/BillGates_2010-0.5-2.0.wav", "wash water all year")
    ]
    assert [r["transcript"] for r in test] == ["we're here"]
    data, rate = soundfile.read(out / "dev/BillGates_2010-0.5-2.0.wav", dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(data, SPEECH[8000:32000])  # cut as DeepSpeech: int(start * rate) on
    report = capsys.readouterr().out
    assert "ted: kept 3 of 7 utterances" in report
    for reason in (
        "skipped 1: marked ignore_time_segment_in_scoring",
        f"skipped 1: {UNKNOWN_WORD}",
        "skipped 1: audio too short for its transcript",
        "skipped 1: no audio samples",
        "AlGore_2009.sph 5.0-6.0 s: the time span holds no audio",
    ):
        assert reason in report, reason


def test_second_run_is_a_no_op(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(release, out, TedConfig(jobs=1), progress=False)
    before = stamps(out)
    prepare(release, out, TedConfig(jobs=1), progress=False)
    assert stamps(out) == before


def test_drop_unk_and_splits(release: Path, tmp_path: Path) -> None:
    (train,) = prepare(release, tmp_path, TedConfig(jobs=1, splits=("train",), drop_unk=True), progress=False)
    assert [r["transcript"] for r in rows(train)] == ["she had your dark suit", "in greasy water"]


def test_tedlium3_legacy_layout(release: Path, tmp_path: Path) -> None:
    root = tmp_path / "TEDLIUM_release-3"
    (root / "legacy").mkdir(parents=True)
    (root / "legacy" / "dev").symlink_to(release / "dev", target_is_directory=True)
    (root / "data").mkdir()
    (dev,) = prepare(root, tmp_path / "out", TedConfig(jobs=1, splits=("dev",)), progress=False)
    assert [r["transcript"] for r in rows(dev)] == ["wash water all year"]


def test_clean_transcript() -> None:
    assert clean_transcript("i 'm {SMACK} here(2) <sil> [laughter] today (AlGore_2009-A)") == "i'm here today"
    assert clean_transcript("rock 'n' roll") == "rock 'n' roll"
    with pytest.raises(Skip):
        clean_transcript("a <unk> word")
    assert clean_transcript("a <unk> word", drop_unk=True) == "a word"


def test_parse_stm(tmp_path: Path) -> None:
    stm = tmp_path / "talk.stm"
    stm.write_text("talk 1 spk 1.5 2.25 hello there\n\n;; c\ntalk 1 spk 3 4 <F0_M> <unk> again\n")
    segments = parse_stm(stm)
    assert [(s.start, s.end, s.transcript) for s in segments] == [
        ("1.5", "2.25", "hello there"),
        ("3", "4", "<unk> again"),
    ]
    stm.write_text("talk 1 spk one two hello\n")
    with pytest.raises(ValueError, match="talk.stm:1: expected"):
        parse_stm(stm)


def test_compressed_sphere_is_a_counted_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ted"
    _split(root, "test", "Old_2001", ["Old_2001 1 Old_2001 0 1 <o,f0,male> hello"])
    sphere(root / "test/sph/Old_2001.sph", SPEECH, coding="pcm,embedded-shorten-v2.00")
    (csv_path,) = prepare(root, tmp_path / "out", TedConfig(jobs=1, splits=("test",)), progress=False)
    assert rows(csv_path) == []
    assert "skipped 1: unreadable audio" in capsys.readouterr().out


def test_bad_layout(release: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no train/stm folder"):
        prepare(DATA, tmp_path, progress=False)
    with pytest.raises(ValueError, match="no other/stm .*choose with --splits"):
        prepare(release, tmp_path, TedConfig(splits=("dev", "other")), progress=False)
