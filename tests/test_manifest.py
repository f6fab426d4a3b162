from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken import manifest
from harken.alphabet import Alphabet
from harken.config import FeatureConfig
from harken.manifest import ManifestError, Sample

DATA = Path(__file__).parent / "data"
TEXT = "she had your dark suit in greasy wash water all year"
WAV_SIZE = (DATA / "LDC93S1.wav").stat().st_size
HEADER = "wav_filename,wav_filesize,transcript\n"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


# --- read_csv / read_manifests ---


def test_read_csv_resolves_relative_paths_against_the_csv_folder(tmp_path: Path) -> None:
    samples = manifest.read_csv(DATA / "LDC93S1.csv")
    assert samples == [Sample(DATA / "LDC93S1.wav", 93638, TEXT)]
    assert samples[0].duration == 0.0
    assert samples[0].path.is_file()

    nested = write(tmp_path / "sub" / "dir" / "x.csv", HEADER + f"../a.wav,12,{TEXT}\nb/c.wav,,hi\n")
    got = manifest.read_csv(nested)
    assert [s.path for s in got] == [
        tmp_path / "sub" / "dir" / "../a.wav",
        tmp_path / "sub" / "dir" / "b/c.wav",
    ]
    assert [s.size for s in got] == [12, 0]  # an empty size is 0
    assert [s.transcript for s in got] == [TEXT, "hi"]


def test_read_csv_keeps_absolute_paths(tmp_path: Path) -> None:
    wav = (DATA / "LDC93S1.wav").resolve()
    csv = write(tmp_path / "abs.csv", HEADER + f"{wav},{WAV_SIZE},{TEXT}\n")
    assert manifest.read_csv(csv) == [Sample(wav, WAV_SIZE, TEXT)]


def test_read_csv_quoted_transcript_blank_lines_and_column_order(tmp_path: Path) -> None:
    csv = write(
        tmp_path / "q.csv",
        'transcript,wav_filename\n"hello, world",a.wav\n\n,\nbye,b.wav\n',
    )
    got = manifest.read_csv(csv)
    assert [(s.path.name, s.size, s.transcript) for s in got] == [
        ("a.wav", 0, "hello, world"),
        ("b.wav", 0, "bye"),
    ]


def test_read_csv_strips_utf8_bom(tmp_path: Path) -> None:
    csv = write(tmp_path / "bom.csv", HEADER + "a.wav,10,héllo\n", encoding="utf-8-sig")
    assert csv.read_bytes().startswith(b"\xef\xbb\xbf")
    assert manifest.read_csv(csv) == [Sample(tmp_path / "a.wav", 10, "héllo")]


def test_read_manifests_joins_comma_separated_files_in_order(tmp_path: Path) -> None:
    first = write(tmp_path / "one.csv", HEADER + "a.wav,1,one\nb.wav,2,two\n")
    second = write(tmp_path / "other" / "two.csv", HEADER + "c.wav,3,three\n")
    spec = f"{first}, {second} ,"
    got = manifest.read_manifests(spec)
    assert [s.transcript for s in got] == ["one", "two", "three"]
    assert got[2].path == tmp_path / "other" / "c.wav"
    assert [s.transcript for s in manifest.read_manifests(spec, limit=2)] == ["one", "two"]
    assert [s.transcript for s in manifest.read_manifests(spec, limit=0)] == ["one", "two", "three"]
    assert [s.transcript for s in manifest.read_manifests([second, first], limit=10)] == [
        "three",
        "one",
        "two",
    ]
    assert manifest.split_files(" a.csv ,,b.csv") == [Path("a.csv"), Path("b.csv")]


def test_missing_csv_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nothere\.csv: no such CSV file"):
        manifest.read_csv(tmp_path / "nothere.csv")
    good = write(tmp_path / "good.csv", HEADER + "a.wav,1,x\n")
    with pytest.raises(ManifestError, match=r"nothere\.csv"):
        manifest.read_manifests(f"{good},{tmp_path / 'nothere.csv'}")


def test_missing_header_columns_name_the_file_and_columns(tmp_path: Path) -> None:
    csv = write(tmp_path / "nohead.csv", "LDC93S1.wav,93638,she had\n")
    with pytest.raises(ManifestError, match=r"nohead\.csv: header .* lacks wav_filename, transcript") as info:
        manifest.read_csv(csv)
    assert "expected wav_filename,wav_filesize,transcript" in str(info.value)
    partial = write(tmp_path / "partial.csv", "wav_filename,wav_filesize\na.wav,1\n")
    with pytest.raises(ManifestError, match=r"partial\.csv: header .* lacks transcript"):
        manifest.read_csv(partial)
    empty = write(tmp_path / "empty.csv", "")
    with pytest.raises(ManifestError, match=r"empty\.csv: empty file"):
        manifest.read_csv(empty)


def test_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    csv = write(tmp_path / "fields.csv", HEADER + "a.wav,1,fine\nb.wav,2,one,too many\n")
    with pytest.raises(ManifestError, match=r"fields\.csv:3: 4 fields, the header has 3"):
        manifest.read_csv(csv)
    short = write(tmp_path / "short.csv", HEADER + "a.wav,1\n")
    with pytest.raises(ManifestError, match=r"short\.csv:2: 2 fields"):
        manifest.read_csv(short)


def test_bad_filesize_names_file_and_line(tmp_path: Path) -> None:
    csv = write(tmp_path / "size.csv", HEADER + "a.wav,1,x\nb.wav,1,y\nc.wav,big,z\n")
    with pytest.raises(ManifestError, match=r"size\.csv:4: wav_filesize 'big' is not a number"):
        manifest.read_csv(csv)


def test_non_utf8_csv_names_the_file(tmp_path: Path) -> None:
    csv = tmp_path / "latin1.csv"
    csv.write_bytes(HEADER.encode() + "a.wav,1,h\xe9\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin1\.csv: not UTF-8"):
        manifest.read_csv(csv)


# --- write_csv ---


def test_write_csv_round_trip_with_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    inside = tmp_path / "clips" / "a.wav"
    shutil.copy(DATA / "LDC93S1.wav", inside)
    outside = (DATA / "LDC93S1.wav").resolve()
    samples = [Sample(inside, 0, TEXT), Sample(outside, 5, 'quote " and, comma')]
    target = tmp_path / "out.csv"
    manifest.write_csv(target, samples)

    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "wav_filename,wav_filesize,transcript"
    assert lines[1] == f"clips/a.wav,{WAV_SIZE},{TEXT}"  # relative; size filled in from the file
    assert lines[2].startswith(outside.as_posix() + ",5,")  # outside the folder: stays absolute

    back = manifest.read_csv(target)
    assert [s.path.resolve() for s in back] == [inside.resolve(), outside]
    assert [(s.size, s.transcript) for s in back] == [(WAV_SIZE, TEXT), (5, 'quote " and, comma')]


def test_write_csv_absolute_when_asked(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"1234")
    manifest.write_csv(tmp_path / "abs.csv", [Sample(wav, 0, "x")], relative=False)
    row = (tmp_path / "abs.csv").read_text().splitlines()[1]
    assert row == f"{wav.resolve().as_posix()},4,x"


def test_write_csv_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "m.csv"
    manifest.write_csv(target, [Sample(tmp_path / "a.wav", 3, "old")])
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.csv"]

    def broken() -> Iterator[Sample]:
        yield Sample(tmp_path / "b.wav", 1, "new")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        manifest.write_csv(target, broken())
    # The old manifest is untouched and no temporary file is left behind.
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.csv"]
    assert [s.transcript for s in manifest.read_csv(target)] == ["old"]


def test_write_csv_gives_an_ordinary_file(tmp_path: Path) -> None:
    target = tmp_path / "m.csv"
    manifest.write_csv(target, [Sample(tmp_path / "a.wav", 3, "x")])
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # as open() would have made it


# --- validate ---


@pytest.fixture
def alphabet() -> Alphabet:
    return Alphabet.from_file(DATA / "alphabet.txt")


CONFIG = FeatureConfig()


def test_validate_keeps_good_samples_with_their_duration(alphabet: Alphabet) -> None:
    samples = manifest.read_csv(DATA / "LDC93S1.csv")
    report = manifest.validate(samples, alphabet, CONFIG)
    assert not report.skipped
    assert len(report.kept) == 1
    assert report.kept[0].path == samples[0].path
    assert report.kept[0].duration == pytest.approx(93594 / 2 / 16000)  # 46797 samples at 16 kHz
    assert report.kept[0].duration == pytest.approx(2.9248, abs=1e-3)
    assert report.hours == pytest.approx(report.kept[0].duration / 3600)
    assert report.resampled == 0


def test_validate_counts_resampled_files(alphabet: Alphabet) -> None:
    samples = [
        Sample(DATA / "LDC93S1.wav", 0, TEXT),
        Sample(DATA / "LDC93S1_pcms16le_1_8000.wav", 0, TEXT),
        Sample(DATA / "LDC93S1_pcms16le_2_44100.wav", 0, TEXT),
    ]
    report = manifest.validate(samples, alphabet, CONFIG)
    assert len(report.kept) == 3
    assert report.resampled == 2
    # Durations are seconds whatever the file's own rate.
    assert [s.duration for s in report.kept] == pytest.approx([2.92] * 3, abs=0.01)
    assert "2 at another sample rate" in report.summary("train")
    only_8k = manifest.validate(samples[1:2], alphabet, CONFIG)
    assert only_8k.resampled == 1 and "1 at another sample rate" in only_8k.summary("x")


def test_validate_skips_missing_files(alphabet: Alphabet, tmp_path: Path) -> None:
    gone = tmp_path / "gone.wav"
    report = manifest.validate([Sample(gone, 0, "hello")], alphabet, CONFIG)
    assert report.kept == []
    assert report.skipped == {manifest.MISSING: 1}
    assert report.details[manifest.MISSING] == [str(gone)]


def test_validate_skips_unreadable_audio(alphabet: Alphabet, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not a wav file at all" * 10)
    report = manifest.validate([Sample(garbage, 0, "hello")], alphabet, CONFIG)
    assert report.kept == []
    assert report.skipped == {manifest.UNREADABLE: 1}
    [detail] = report.details[manifest.UNREADABLE]
    assert detail.startswith(f"{garbage}: ")
    assert "not a readable audio file" in detail


def test_validate_skips_files_without_samples(alphabet: Alphabet, tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros(0, dtype=np.int16), 16000)
    report = manifest.validate([Sample(empty, 0, "hello")], alphabet, CONFIG)
    assert report.skipped == {manifest.EMPTY_AUDIO: 1}
    assert report.details[manifest.EMPTY_AUDIO] == [str(empty)]


@pytest.mark.parametrize("transcript", ["", "   "])
def test_validate_skips_empty_transcripts(alphabet: Alphabet, transcript: str) -> None:
    report = manifest.validate([Sample(DATA / "LDC93S1.wav", 0, transcript)], alphabet, CONFIG)
    assert report.kept == []
    assert report.skipped == {manifest.EMPTY_TRANSCRIPT: 1}
    assert report.details[manifest.EMPTY_TRANSCRIPT] == [str(DATA / "LDC93S1.wav")]


def test_validate_keeps_empty_transcripts_as_non_speech_when_asked(alphabet: Alphabet) -> None:
    samples = [Sample(DATA / "LDC93S1.wav", 0, ""), Sample(DATA / "LDC93S1.wav", 0, "she had")]
    report = manifest.validate(samples, alphabet, CONFIG, keep_empty=True)
    assert [s.transcript for s in report.kept] == ["", "she had"] and not report.skipped
    assert "2 samples (0.00 h) kept, 1 of them non-speech (empty transcript)" in report.summary("train")


def test_validate_skips_characters_outside_the_alphabet(alphabet: Alphabet) -> None:
    report = manifest.validate([Sample(DATA / "LDC93S1.wav", 0, "She Had yoUr")], alphabet, CONFIG)
    assert report.kept == []
    assert report.skipped == {manifest.OUT_OF_ALPHABET: 1}
    assert report.details[manifest.OUT_OF_ALPHABET] == [f"{DATA / 'LDC93S1.wav'}: 'SHU'"]


def test_validate_skips_audio_too_short_for_its_transcript(alphabet: Alphabet, tmp_path: Path) -> None:
    short = tmp_path / "short.wav"
    soundfile.write(str(short), np.zeros(1600, dtype=np.int16), 16000)  # 0.1 s: (1600 - 512) // 320 + 1 = 4
    report = manifest.validate([Sample(short, 0, TEXT), Sample(short, 0, "abcd")], alphabet, CONFIG)
    assert report.skipped == {manifest.TOO_SHORT: 1}
    # 52 characters plus a blank between the two l of "all": 53 frames needed.
    assert report.details[manifest.TOO_SHORT] == [f"{short}: 4 frames for 53 needed"]
    assert [s.transcript for s in report.kept] == ["abcd"]  # exactly enough frames
    repeats = manifest.validate([Sample(short, 0, "aab")], alphabet, CONFIG)  # a a _ b: fits in 4
    assert len(repeats.kept) == 1
    too_many = manifest.validate([Sample(short, 0, "aabb")], alphabet, CONFIG)  # a _ a b _ b: 6 > 4
    assert too_many.skipped == {manifest.TOO_SHORT: 1}


def test_validate_counts_every_reason_and_summary_mentions_each(alphabet: Alphabet, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"\x00\x01garbage" * 50)
    short = tmp_path / "short.wav"
    soundfile.write(str(short), np.zeros(1600, dtype=np.int16), 16000)
    good = DATA / "LDC93S1.wav"
    samples = [Sample(tmp_path / f"missing{i}.wav", 0, "x") for i in range(5)] + [
        Sample(garbage, 0, "x"),
        Sample(good, 0, ""),
        Sample(good, 0, "UPPER"),
        Sample(short, 0, TEXT),
        Sample(good, 0, TEXT),
    ]
    report = manifest.validate(samples, alphabet, CONFIG)
    assert report.skipped == {
        manifest.MISSING: 5,
        manifest.UNREADABLE: 1,
        manifest.EMPTY_TRANSCRIPT: 1,
        manifest.OUT_OF_ALPHABET: 1,
        manifest.TOO_SHORT: 1,
    }
    assert len(report.kept) == 1
    text = report.summary("train", examples=3)
    first = text.splitlines()[0]
    assert first == f"train: 1 samples ({report.hours:.2f} h) kept"
    for reason in (
        manifest.MISSING,
        manifest.UNREADABLE,
        manifest.EMPTY_TRANSCRIPT,
        manifest.OUT_OF_ALPHABET,
        manifest.TOO_SHORT,
    ):
        assert f"skipped {report.skipped[reason]}: {reason}" in text
    assert "skipped 5: missing file" in text
    assert "... and 2 more" in text  # 5 missing files, 3 shown
    assert str(tmp_path / "missing2.wav") in text
    assert str(tmp_path / "missing3.wav") not in text
    assert "garbage.wav" in text and "short.wav" in text


def test_ctc_min_frames_needs_a_blank_between_repeats() -> None:
    assert manifest.ctc_min_frames([]) == 0
    assert manifest.ctc_min_frames([1]) == 1
    assert manifest.ctc_min_frames([1, 2, 3]) == 3
    assert manifest.ctc_min_frames([1, 1]) == 3
    assert manifest.ctc_min_frames([1, 1, 1]) == 5
    assert manifest.ctc_min_frames([1, 2, 1]) == 3
    assert manifest.ctc_min_frames([1, 1, 2, 2, 3]) == 7


def test_rejected_samples_are_listed_with_their_reason(tmp_path: Path) -> None:
    samples = [
        manifest.Sample(tmp_path / "gone.wav", 0, "hello"),
        manifest.Sample(DATA / "LDC93S1.wav", 0, "Upper Case"),
        manifest.Sample(DATA / "LDC93S1.wav", 0, "fine"),
    ]
    report = manifest.validate(samples, Alphabet.default(), FeatureConfig())
    listing = tmp_path / "skipped.csv"
    report.write_rejected(listing)
    rows = listing.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "wav_filename,wav_filesize,transcript,reason,detail"
    assert rows[1].startswith(f"{(tmp_path / 'gone.wav').as_posix()},0,hello,missing file")
    assert rows[2].endswith(",Upper Case,characters outside the alphabet,'UC'")
    assert len(rows) == 3 and len(report.kept) == 1
