import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken import audio
from harken.importers import IMPORTERS
from harken.importers.commonvoice import CommonVoiceConfig, prepare

from conftest import DATA

SPEECH = audio.read(DATA / "LDC93S1.wav", 48000)  # Common Voice clips are 48 kHz mp3
HEADER = [
    "client_id",
    "path",
    "sentence",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "locale",
    "segment",
]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def stamps(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in sorted(folder.rglob("*")) if path.is_file()}


def _tsv(path: Path, lines: list[tuple[str, str, str]]) -> None:
    text = "\t".join(HEADER) + "\n"
    text += "".join(f"{client}\t{clip}\t{sentence}\t2\t0\t\t\t\ten\t\n" for client, clip, sentence in lines)
    path.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Common Voice release folder in its real layout: .tsv files and clips/*.mp3."""
    root = tmp_path_factory.mktemp("cv") / "cv-corpus-1.0" / "en"
    clips = root / "clips"
    clips.mkdir(parents=True)
    seconds = {"a": 1.2, "b": 1.0, "c": 1.5, "d": 0.1, "e": 2.9, "f": 1.0, "g": 1.1, "h": 1.3, "legacy": 1.0}
    for name, length in seconds.items():
        soundfile.write(
            clips / f"common_voice_en_{name}.mp3", SPEECH[: int(length * 48000)], 48000, format="MP3"
        )
    (clips / "common_voice_en_bad.mp3").write_bytes(np.random.default_rng(0).bytes(3000))
    _tsv(
        root / "train.tsv",
        [
            ("spk1", "common_voice_en_a.mp3", '"She had," he said, “your dark suit.”'),
            ("spk1", "common_voice_en_b.mp3", "Don’t wash it in 2 minutes"),  # a digit
            ("spk2", "common_voice_en_d.mp3", "a sentence much too long for a tenth of a second"),
            (
                "spk2",
                "common_voice_en_e.mp3",
                "She had your dark suit in greasy wash water all year.",
            ),  # > 2 s
            ("spk2", "common_voice_en_missing.mp3", "not there"),
            ("spk3", "common_voice_en_bad.mp3", "corrupt audio"),
            ("spk3", "common_voice_en_legacy", "Old releases named clips without a suffix"),
            ("spk3", "common_voice_en_g.mp3", "   "),
        ],
    )
    _tsv(root / "dev.tsv", [("spk4", "common_voice_en_c.mp3", "Greasy wash water!")])
    _tsv(root / "test.tsv", [("spk5", "common_voice_en_f.mp3", "Café au lait")])
    _tsv(
        root / "validated.tsv",
        [
            ("spk1", "common_voice_en_a.mp3", '"She had," he said, “your dark suit.”'),
            ("spk6", "common_voice_en_h.mp3", "Another sentence"),
            ("spk4", "common_voice_en_g.mp3", "said by a dev speaker"),
            ("spk7", "common_voice_en_c.mp3", "greasy wash water"),  # a dev sentence
        ],
    )
    (root / "invalidated.tsv").write_text("\t".join(HEADER) + "\n", encoding="utf-8")
    return root


def test_import(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    csvs = prepare(release, out, CommonVoiceConfig(max_duration=2.0, jobs=1), progress=False)
    assert csvs == [out / "train.csv", out / "dev.csv", out / "test.csv"]
    train, dev, test = (rows(path) for path in csvs)
    assert [(r["wav_filename"], r["transcript"]) for r in train] == [
        ("clips/common_voice_en_a.wav", "she had he said your dark suit"),
        ("clips/common_voice_en_legacy.wav", "old releases named clips without a suffix"),
    ]
    assert [r["transcript"] for r in dev] == ["greasy wash water"]
    assert [r["transcript"] for r in test] == ["café au lait"]
    data, rate = soundfile.read(out / "clips/common_voice_en_a.wav", dtype="int16")
    assert rate == 16000 and data.ndim == 1 and abs(len(data) - 1.2 * 16000) < 1200  # mp3 adds some padding
    assert int(train[0]["wav_filesize"]) == (out / "clips/common_voice_en_a.wav").stat().st_size
    report = capsys.readouterr().out
    assert (
        "commonvoice: kept 4 of 10 utterances" in report and "(train.csv 2, dev.csv 1, test.csv 1)" in report
    )
    for reason in (
        "skipped 1: digits or symbols in the transcript",
        "skipped 1: audio too short for its transcript",
        "skipped 1: audio longer than --max_duration",
        "skipped 1: missing file",
        "skipped 1: unreadable audio",
        "skipped 1: empty transcript",
    ):
        assert reason in report, reason


def test_second_run_is_a_no_op(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    config = CommonVoiceConfig(jobs=1)
    prepare(release, out, config, progress=False)
    before = stamps(out)
    capsys.readouterr()
    prepare(release, out, config, progress=False)
    assert stamps(out) == before
    assert "converted" not in capsys.readouterr().out


def test_normalize_and_filter_alphabet(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = CommonVoiceConfig(jobs=1, filter_alphabet=DATA / "alphabet.txt", splits=("test",))
    assert rows(prepare(release, out, config, progress=False)[0]) == []  # é is not in the alphabet
    config = CommonVoiceConfig(
        jobs=1, filter_alphabet=DATA / "alphabet.txt", splits=("test",), normalize=True
    )
    assert [r["transcript"] for r in rows(prepare(release, out, config, progress=False)[0])] == [
        "cafe au lait"
    ]


def test_train_all_leaves_out_dev_and_test_speakers_and_sentences(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (csv_path,) = prepare(release, out, CommonVoiceConfig(jobs=1, splits=("train-all",)), progress=False)
    assert csv_path == out / "train-all.csv"
    assert [r["transcript"] for r in rows(csv_path)] == ["she had he said your dark suit", "another sentence"]


def test_other_tsv_names(release: Path, tmp_path: Path) -> None:
    (csv_path,) = prepare(
        release, tmp_path, CommonVoiceConfig(jobs=1, splits=("invalidated",)), progress=False
    )
    assert rows(csv_path) == []


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "no such folder"),
        ("empty", "the folder is empty"),
        ("no-tsv", "no .tsv files"),
        ("parent", "give one of its language folders: en"),
        ("no-clips", "clips: no such folder"),
    ],
)
def test_bad_sources(release: Path, tmp_path: Path, layout: str, message: str) -> None:
    source = {"missing": tmp_path / "nothing", "empty": tmp_path / "empty", "parent": release.parent}.get(
        layout, tmp_path / layout
    )
    if layout in ("empty", "no-tsv", "no-clips"):
        source.mkdir()
    if layout == "no-tsv":
        (source / "readme.txt").write_text("x")
        (source / "clips").mkdir()
    if layout == "no-clips":
        for split in ("train", "dev", "test"):
            (source / f"{split}.tsv").write_text("\t".join(HEADER) + "\n")
    with pytest.raises(ValueError, match=message):
        prepare(source, tmp_path / "out", CommonVoiceConfig(jobs=1), progress=False)


def test_missing_split_and_bad_columns(release: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="other.tsv: no such file .*choose with --splits"):
        prepare(release, tmp_path, CommonVoiceConfig(splits=("other",)), progress=False)
    with pytest.raises(ValueError, match="--splits"):
        CommonVoiceConfig(splits=("../x",))
    broken = tmp_path / "broken"
    (broken / "clips").mkdir(parents=True)
    (broken / "train.tsv").write_text("file\ttext\nx.mp3\thello\n")
    with pytest.raises(ValueError, match="train.tsv: no column path, sentence"):
        prepare(broken, tmp_path / "out", CommonVoiceConfig(splits=("train",)), progress=False)


def test_registered() -> None:
    assert "commonvoice" in IMPORTERS
