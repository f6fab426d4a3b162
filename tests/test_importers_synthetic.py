"""The espeak-ng synthetic corpus importer: the grammar, the plan, and the corpus it writes (the speaking
itself: test_audio_synthesizer.py)."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken.importers import IMPORTERS
from harken.importers.synthetic import SyntheticConfig, prepare, sentences


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["wav_filename", "wav_filesize", "transcript"]
        return list(reader)


def test_grammar_is_deterministic_and_plain() -> None:
    first = sentences(200, seed=7)
    assert first == sentences(200, seed=7)
    assert first != sentences(200, seed=8)
    assert len(set(first)) == 200
    for sentence in first:
        assert re.fullmatch(r"[a-z']+( [a-z']+)*", sentence), sentence
        assert 4 <= len(sentence.split()) <= 8
    assert len({word for sentence in first for word in sentence.split()}) <= 60


def _tiny(**overrides: object) -> SyntheticConfig:
    settings: dict[str, object] = {
        "n_sentences": 6,
        "train_voices": ("en+m1", "en-us+f2"),
        "test_voices": ("en-gb-x-rp+m4",),
    }
    settings.update(overrides)
    return SyntheticConfig(**settings)


def test_prepare_writes_a_consistent_corpus(tmp_path: Path) -> None:
    config = _tiny()
    csvs = prepare(tmp_path, config, progress=False)
    assert csvs == [tmp_path / "train.csv", tmp_path / "dev.csv", tmp_path / "test.csv"]
    splits = {path.stem: _rows(path) for path in csvs}
    # 6 sentences: 5 trained (each by both training voices), 1 held out (spoken by the held-out voice);
    # and one training recording with nobody speaking (8 % of 10, rounded)
    assert len(splits["train"]) == 11 and sum(not row["transcript"] for row in splits["train"]) == 1
    assert len(splits["dev"]) + len(splits["test"]) == 1
    for rows in splits.values():
        for row in rows:
            wav = tmp_path / row["wav_filename"]
            assert not Path(row["wav_filename"]).is_absolute() and wav.is_file()
            assert int(row["wav_filesize"]) == os.path.getsize(wav)
            audio, rate = soundfile.read(wav, dtype="int16")
            assert rate == 16000 and audio.ndim == 1 and len(audio) > 8000
            assert re.fullmatch(r"[a-z' ]*", row["transcript"])  # empty: nobody speaking
    held_out = {row["transcript"] for row in splits["dev"] + splits["test"]}
    assert held_out and not held_out & {row["transcript"] for row in splits["train"]}  # unseen sentences
    assert not list((tmp_path / "wav").glob(".*"))  # no temporary files left behind


def test_training_utterances_are_recorded_in_varied_conditions(tmp_path: Path) -> None:
    """Half as spoken, half with silence or noise around the speech (or a line), every one at a level
    from -35 to -1 dBFS; dev and test stay speech alone; ``conditions=None`` (``--clean``) makes the
    training split speech alone too."""
    config = _tiny(n_sentences=8)
    prepare(tmp_path / "varied", config, progress=False)
    prepare(tmp_path / "clean", _tiny(n_sentences=8, conditions=None), progress=False)
    peaks, longer, as_spoken = [], 0, 0
    for split in ("train", "dev", "test"):
        varied = _rows(tmp_path / "varied" / f"{split}.csv")
        clean = _rows(tmp_path / "clean" / f"{split}.csv")
        if split == "train":  # and recordings with nobody speaking: 5 % as many, 1-4 s of noise
            nobody = [r for r in varied if not r["transcript"]]
            varied = [r for r in varied if r["transcript"]]
            assert len(nobody) == round(0.08 * len(varied)) >= 1
            for row in nobody:
                x, _ = soundfile.read(tmp_path / "varied" / row["wav_filename"], dtype="float32")
                assert 1.0 <= len(x) / 16000 <= 4.0 and np.abs(x).max() < 0.3
        assert [r["transcript"] for r in varied] == [r["transcript"] for r in clean]
        for a, b in zip(varied, clean, strict=True):
            x, _ = soundfile.read(tmp_path / "varied" / a["wav_filename"], dtype="float32")
            y, _ = soundfile.read(tmp_path / "clean" / b["wav_filename"], dtype="float32")
            if split == "train":
                peaks.append(20 * np.log10(np.abs(x).max()))
                longer += len(x) > len(y)
                if len(x) == len(y):  # the same speech at another level (16-bit steps at -35 dBFS: 2e-3)
                    as_spoken += np.allclose(x / np.abs(x).max(), y / np.abs(y).max(), atol=5e-3)
            else:
                assert np.array_equal(x, y)
    assert len(peaks) >= 10 and min(peaks) >= -35.5 and max(peaks) <= -0.9
    assert max(peaks) - min(peaks) > 10  # levels vary
    assert longer >= 3 and as_spoken >= 3 and longer + as_spoken == len(peaks)


def test_no_held_out_voice_in_train(tmp_path: Path) -> None:
    from harken.importers.synthetic import _plan

    config = _tiny(n_sentences=30, train_voices=("en+m1", "en-us+f2", "en+m3"))
    plan = _plan(sentences(30, 1), config)
    assert {u.voice for u in plan if u.split == "train" and u.text} <= set(config.train_voices)
    assert {u.voice for u in plan if u.split != "train"} == set(config.test_voices)
    per_sentence = [sum(u.text == t and u.split == "train" for u in plan) for t in sentences(30, 1)]
    assert per_sentence.count(0) == 6  # the held-out fifth of the sentences
    assert set(per_sentence) - {0} <= {2, 3}
    held = {u.text for u in plan if u.split != "train"}
    assert len(held) == 6 and not held & {u.text for u in plan if u.split == "train"}


def test_second_run_rewrites_nothing(tmp_path: Path) -> None:
    config = _tiny()
    prepare(tmp_path, config, progress=False)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    prepare(tmp_path, config, progress=False)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == stamps


def test_prepare_resumes_after_a_lost_wav(tmp_path: Path) -> None:
    config = _tiny(n_sentences=2)
    prepare(tmp_path, config, progress=False)
    victim = tmp_path / _rows(tmp_path / "train.csv")[0]["wav_filename"]
    victim.write_bytes(b"")
    prepare(tmp_path, config, progress=True)
    assert victim.stat().st_size > 1000


def test_prepare_rejects_unknown_voice_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="en\\+zz9"):
        prepare(tmp_path, _tiny(test_voices=("en+zz9",)), progress=False)
    assert not (tmp_path / "wav").exists()


def test_config_rejects_shared_voices() -> None:
    with pytest.raises(ValueError, match="en\\+m1"):
        SyntheticConfig(train_voices=("en+m1",), test_voices=("en+m1",))


def test_text_file_sentences(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("hello there\n\nsay   it again\nhello there\n", encoding="utf-8")
    prepare(tmp_path / "corpus", _tiny(text_file=good), progress=False)
    transcripts = {
        row["transcript"]
        for name in ("train", "dev", "test")
        for row in _rows(tmp_path / "corpus" / f"{name}.csv")
    }
    assert transcripts == {"hello there", "say it again"}


@pytest.mark.parametrize(
    ("content", "where"), [("", "empty.txt: no sentences"), ("fine line\nBad Line\n", "empty.txt:2:")]
)
def test_text_file_errors(tmp_path: Path, content: str, where: str) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(where)):
        prepare(tmp_path / "corpus", _tiny(text_file=path), progress=False)


def test_registry() -> None:
    assert "synthetic" in IMPORTERS and "espeak-ng" in IMPORTERS["synthetic"].help
