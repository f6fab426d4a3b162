"""Which files of a folder are audio (harken.audio.folder): one filter for `harken transcribe DIR` and
`harken import folder`."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken import audio, cli, transcribe

from conftest import DATA


def test_audio_files_by_suffix_without_hidden_ones(tmp_path: Path) -> None:
    names = ("b.wav", "a.FLAC", "c.wave", "sub/d.mp3", "notes.txt", "._b.wav", ".hidden.wav", ".Trash/e.wav")
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.wav").mkdir()  # a folder, not an audio file; what is inside it is
    (tmp_path / "folder.wav" / "f.ogg").write_bytes(b"")
    expected = [tmp_path / n for n in ("a.FLAC", "b.wav", "c.wave", "folder.wav/f.ogg", "sub/d.mp3")]
    assert audio.audio_files(tmp_path) == expected
    assert audio.audio_files(tmp_path, leave_out={tmp_path / "sub"}) == expected[:-1]
    assert audio.hidden(".Trash") and audio.hidden("._b.wav") and not audio.hidden("b.wav")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_links_to_files_are_taken_and_links_to_folders_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.wav").write_bytes(b"")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked.wav").symlink_to(tmp_path / "elsewhere" / "x.wav")
    (root / "broken.wav").symlink_to(tmp_path / "nothing.wav")
    (root / "folder").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert audio.audio_files(root) == [root / "linked.wav"]


def test_transcribe_dir_and_import_folder_take_the_same_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples, rate = soundfile.read(str(DATA / "LDC93S1.wav"), dtype="int16")
    source = tmp_path / "source"
    taken_names = ["Four.WAV", "one.wave", "sub/three.wav", "two.flac"]
    for name in [*taken_names, ".hidden.wav", "._one.wave", ".cache/x.flac"]:
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), samples, rate, format="FLAC" if name.endswith(".flac") else "WAV")
        path.with_suffix(".txt").write_text("she had your dark suit", encoding="utf-8")
    (source / "notes.txt").write_text("not a transcript of anything", encoding="utf-8")
    (source / "clip.mp4").write_bytes(np.zeros(100, np.uint8).tobytes())
    target = tmp_path / "target"
    assert cli.main(["import", "folder", str(source), str(target), "--noprogress", "--jobs", "1"]) == 0
    assert "kept 4 of 4 utterances" in capsys.readouterr().out
    with (target / "all.csv").open(newline="", encoding="utf-8") as handle:
        wavs = [target / row["wav_filename"] for row in csv.DictReader(handle)]  # converted, or used in place
    imported = sorted(
        (w.relative_to(target / "wav") if w.is_relative_to(target / "wav") else w.relative_to(source)).stem
        for w in wavs
    )
    taken = transcribe.expand([source])
    assert sorted(path.relative_to(source).stem for path in taken) == imported
    assert [path.relative_to(source).as_posix() for path in taken] == taken_names
