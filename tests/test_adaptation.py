"""``harken adapt``: its refusals, the dev split, the scorer's size, the record that makes it resumable, and
runs on an untrained tiny model (fast) and, marked slow, a whole run with a fine-tune on espeak-ng speech."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from harken import adaptation, audio, checkpoint, cli, export, manifest
from harken.adaptation import AdaptConfig, adapt
from harken.adaptation_inputs import AdaptError, read_text, scorer_size, split_dev
from harken.adaptation_report import Rates, RunState, StepResult, table
from harken.adaptation_resume import changed_settings, locked
from harken.alphabet import Alphabet
from harken.config import ExportConfig
from harken.manifest import Sample
from harken.train import build, save

from conftest import DATA, LDC93S1_TEXT, ldc_config

DOMAIN = [
    LDC93S1_TEXT,
    "she had your dark suit in greasy wash water",
    "wash water all year",
    "your dark suit all year",
    "she had greasy water",
]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained n_hidden 32 model: a checkpoint directory (train-0.pt)."""
    directory = tmp_path_factory.mktemp("tiny") / "ckpt"
    save(build(ldc_config(directory, epochs=1, n_hidden=32), log=lambda _: None))
    return directory


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "domain.txt"
    path.write_text("\n".join(DOMAIN) + "\n", encoding="utf-8")
    return path


def _recordings(path: Path, count: int, speakers: int = 0) -> Path:
    """A CSV of ``count`` rows of LDC93S1 (2.9 s each), with a speaker column when ``speakers``."""
    header = "wav_filename,wav_filesize,transcript" + (",speaker" if speakers else "")
    rows = [
        f"{DATA / 'LDC93S1.wav'},93638,{LDC93S1_TEXT}" + (f",s{n % speakers}" if speakers else "")
        for n in range(count)
    ]
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _quick(text: Path, output: Path, base: Path, **options: object) -> AdaptConfig:
    defaults: dict[str, object] = {"n_trials": 3, "export_onnx": False, "show_progressbar": False}
    return AdaptConfig(text=text, output=output, checkpoint_dir=base, **{**defaults, **options})  # type: ignore[arg-type]


# --- inputs ------------------------------------------------------------------------------------------------


def test_a_text_in_another_alphabet_or_without_words_is_refused(tmp_path: Path) -> None:
    russian = tmp_path / "ru.txt"
    russian.write_text("бедняга ребят на его месте\nдолжен был быть я\n", encoding="utf-8")
    with pytest.raises(AdaptError, match=r"^--text .*ru.txt: 100% of its words have characters"):
        read_text(russian, Alphabet.default())
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(AdaptError, match="the text has no words"):
        read_text(empty, Alphabet.default())
    with pytest.raises(AdaptError, match="no such file"):
        read_text(tmp_path / "none.txt", Alphabet.default())


def test_a_few_unspellable_words_are_tolerated_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("Turn The Oven On\n" * 30 + "café\n", encoding="utf-8")  # upper case: lowercased
    found = read_text(path, Alphabet.default())
    assert (found.sentences, found.running_words, found.distinct_words) == (31, 121, 5)
    assert found.unspellable_words == 1


def test_the_scorer_grows_with_the_text() -> None:
    assert scorer_size(5_000) == (3, (0,))
    assert scorer_size(99_999) == (3, (0,))
    assert scorer_size(100_000) == (4, (0, 0, 1))
    assert scorer_size(50_000_000) == (5, (0, 0, 1))


def _samples(count: int) -> list[Sample]:
    return [Sample(Path(f"{n}.wav"), 0, f"text {n}") for n in range(count)]


def test_dev_takes_whole_speakers_and_at_least_the_minimum() -> None:
    samples = _samples(40)
    speakers = [f"s{n % 5}" for n in range(40)]  # 8 clips each
    split = split_dev(samples, speakers, fraction=0.2, minimum=10, seed=1)
    dev_speakers = {speakers[samples.index(s)] for s in split.dev}
    train_speakers = {speakers[samples.index(s)] for s in split.train}
    assert not dev_speakers & train_speakers and len(dev_speakers) == 2 and len(split.dev) == 16
    assert len(split.train) == 24 and "2 of 5 speakers" in split.how
    again = split_dev(samples, speakers, fraction=0.2, minimum=10, seed=1)
    assert again == split  # the seed fixes it
    assert split_dev(samples, speakers, fraction=0.2, minimum=10, seed=2).dev != split.dev


def test_dev_takes_rows_without_speakers_and_everything_when_too_few() -> None:
    samples = _samples(100)
    split = split_dev(samples, None, fraction=0.2, minimum=10, seed=3)
    assert len(split.dev) == 20 and len(split.train) == 80 and not set(split.dev) & set(split.train)
    assert split_dev(samples, None, fraction=0.05, minimum=10, seed=3).dev.__len__() == 10
    few = split_dev(_samples(8), None, fraction=0.2, minimum=10, seed=3)
    assert few.train == [] and len(few.dev) == 8 and "too few" in few.how
    one_speaker = split_dev(samples, ["a"] * 100, fraction=0.2, minimum=10, seed=3)
    assert len(one_speaker.dev) == 20  # one speaker cannot be split by speaker: rows


def test_an_unbalanced_speaker_does_not_take_the_dev_set() -> None:
    samples = _samples(100)
    speakers = ["big" if n < 80 else f"s{n % 10}" for n in range(100)]  # one speaker: 80 % of the clips
    for seed in range(10):
        split = split_dev(samples, speakers, fraction=0.2, minimum=10, seed=seed)
        assert 18 <= len(split.dev) <= 22 and len(split.train) >= 78, (seed, len(split.dev))
        assert all(speakers[samples.index(s)] != "big" for s in split.dev)
    two = ["big"] * 90 + ["small"] * 10  # the small speaker alone is dev data, the big one trains
    split = split_dev(samples, two, fraction=0.2, minimum=10, seed=0)
    assert len(split.dev) == 10 and "1 of 2 speakers" in split.how
    split = split_dev(samples, ["big"] * 95 + ["small"] * 5, fraction=0.2, minimum=10, seed=0)
    assert len(split.dev) == 20 and "speakers too unbalanced" in split.how  # rows, not 95 clips


def test_punctuation_capitals_and_a_bom_are_english_not_another_alphabet(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("\ufeffTurn the oven on, please!\n\"Don't\" -- it's (hot).\n" * 5, encoding="utf-8")
    found = read_text(path, Alphabet.default())
    assert (found.running_words, found.distinct_words, found.unspellable_words) == (40, 8, 0)
    russian = tmp_path / "ru.txt"
    russian.write_text("Бедняга, ребят!\n", encoding="utf-8")
    with pytest.raises(AdaptError, match="characters the model's alphabet lacks"):
        read_text(russian, Alphabet.default())


# --- the record ---------------------------------------------------------------------------------------------


def test_the_record_resumes_its_own_run_and_refuses_another(tmp_path: Path) -> None:
    output = tmp_path / "out"
    state = RunState.open(output, {"text": "a.txt", "epochs": 60})
    result = StepResult("base", 1.5, Rates(0.5, 0.25, 10), None, {"label": "no scorer"})
    state.record(result)
    again = RunState.open(output, {"text": "a.txt", "epochs": 60})
    assert again.done("base") == result and again.done("scorer") is None
    with pytest.raises(AdaptError, match=r"holds another run's results \(--epochs was 60, now 30\)"):
        RunState.open(output, {"text": "a.txt", "epochs": 30})
    with pytest.raises(AdaptError, match="the file's contents of --text changed"):
        RunState.open(output, {"text": "a.txt", "epochs": 60, "text_digest": "123"})
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(AdaptError, match="a folder with other files in it"):
        RunState.open(other, {})
    assert (other / "notes.txt").read_text() == "mine"


def test_the_table_shows_each_step_and_a_dash_where_nothing_was_measured() -> None:
    steps = [
        StepResult("base", 2.0, Rates(0.8, 0.4, 10), Rates(0.9, 0.5, 20)),
        StepResult("scorer", 150.0, Rates(0.3, 0.2, 10), None, {"label": "3-gram"}),
    ]
    lines = table(steps).splitlines()
    assert lines[0].split() == ["step", "dev", "WER", "dev", "CER", "test", "WER", "test", "CER", "time"]
    assert lines[2].split() == ["base", "model", "80.0%", "40.0%", "90.0%", "50.0%", "2.0", "s"]
    assert lines[3].split() == ["+", "scorer", "(3-gram)", "30.0%", "20.0%", "-", "-", "2.5", "min"]


# --- runs on an untrained tiny model ---------------------------------------------------------------------


def test_text_alone_gives_a_scorer_with_its_defaults(
    text: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    lines: list[str] = []
    state = adapt(_quick(text, tmp_path / "out", tiny_checkpoint), log=lines.append)
    assert list(state.steps) == ["scorer"] and state.steps["scorer"].dev is None
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["result"]["note"].startswith("no dev audio to measure on")
    assert report["result"]["alpha"] == pytest.approx(0.931289039105002)
    assert (tmp_path / "out" / "lm.scorer").is_file() and (tmp_path / "out" / "model.pt").is_file()
    assert any(line.startswith("Use it: harken transcribe --model") for line in lines)


def test_too_little_audio_adapts_the_scorer_only_and_a_rerun_resumes(
    text: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    csv = _recordings(tmp_path / "rec.csv", 12, speakers=4)
    config = _quick(text, tmp_path / "out", tiny_checkpoint, csv=csv, min_dev=3)
    lines: list[str] = []
    state = adapt(config, log=lines.append)
    assert list(state.steps) == ["base", "scorer", "tuned"]
    note = next(line for line in lines if line.startswith("note:"))
    assert "0.4 min of training audio after the dev split, under --min_finetune_minutes 0.5" in note
    assert state.steps["base"].dev is not None and state.steps["base"].dev.clips == 3
    assert len(manifest.read_csv(tmp_path / "out" / "data" / "train.csv")) == 9
    stored = (tmp_path / "out" / "adapt.json").read_text()
    lines.clear()
    again = adapt(config, log=lines.append)
    assert again.steps == state.steps and (tmp_path / "out" / "adapt.json").read_text() == stored
    assert sum("done by an earlier run" in line for line in lines) == 3
    lines.clear()
    more = adapt(
        _quick(text, tmp_path / "out", tiny_checkpoint, csv=csv, min_dev=3, n_trials=4), lines.append
    )
    assert sum("done by an earlier run" in line for line in lines) == 2  # base and scorer kept
    assert more.steps["tuned"].details["trials"] == 4 and more.steps["base"] == state.steps["base"]


def test_an_onnx_base_adapts_the_scorer_and_is_copied(
    text: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    wav = DATA / "LDC93S1.wav"
    (onnx,) = export.export(
        checkpoint.load_model(tiny_checkpoint), ExportConfig(export_dir=str(tmp_path)), wav
    )
    csv = _recordings(tmp_path / "rec.csv", 30)
    config = AdaptConfig(
        text=text, output=tmp_path / "out", model=onnx.path, csv=csv, min_dev=3, n_trials=2,
        min_finetune_minutes=0, show_progressbar=False,
    )  # fmt: skip
    lines: list[str] = []
    state = adapt(config, log=lines.append)
    assert "fine-tuned" not in state.steps and any("an .onnx file cannot be trained" in x for x in lines)
    assert (tmp_path / "out" / "model.onnx").read_bytes() == onnx.path.read_bytes()
    assert not (tmp_path / "out" / "model.pt").exists()


def _change(directory: Path) -> None:
    """The checkpoint in ``directory`` with other weights (the same file name)."""
    (path,) = sorted(directory.glob("*.pt"))
    payload = checkpoint.read(path)
    name = next(iter(payload["model"]))
    payload["model"][name] = payload["model"][name] + 1
    torch.save(payload, path)


def test_a_changed_base_model_is_refused_and_never_copied(
    text: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_checkpoint, base)
    out = tmp_path / "out"
    adapt(_quick(text, out, base), log=lambda _: None)
    assert "checkpoint_dir_digest" in json.loads((out / "adapt.json").read_text())["inputs"]
    _change(base)
    with pytest.raises(AdaptError, match=r"^--output .*: holds another run's results \(the base model "):
        adapt(_quick(text, out, base), log=lambda _: None)
    shutil.copytree(tiny_checkpoint, base, dirs_exist_ok=True)
    original = adaptation.Steps.scorer

    def scorer_then_change(self: adaptation.Steps) -> object:
        found = original(self)
        _change(base)  # the base model changes while the run goes on
        return found

    other = tmp_path / "other"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adaptation.Steps, "scorer", scorer_then_change)
        with pytest.raises(AdaptError, match="--checkpoint_dir .*: the base model changed during the run"):
            adapt(_quick(text, other, base), log=lambda _: None)
    assert not (other / "model.pt").exists()


def test_test_and_dev_recordings_must_not_be_trained_or_tuned_on(
    text: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    csv = _recordings(tmp_path / "rec.csv", 12)
    out = tmp_path / "out"
    with pytest.raises(AdaptError, match=r"^--test_csv .*rec.csv: 12 of its recordings are also in --csv"):
        adapt(_quick(text, out, tiny_checkpoint, csv=csv, test_csv=csv), log=lambda _: None)
    with pytest.raises(AdaptError, match=r"^--dev_csv .*rec.csv: 12 of its recordings are also in --csv"):
        adapt(_quick(text, out, tiny_checkpoint, csv=csv, dev_csv=csv), log=lambda _: None)
    assert not out.exists()


def test_broken_audio_in_the_test_csv_is_refused_before_anything_is_written(
    text: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    test_csv = tmp_path / "test.csv"
    test_csv.write_text(f"wav_filename,wav_filesize,transcript\n{broken},9,{LDC93S1_TEXT}\n")
    out = tmp_path / "out"
    config = _quick(text, out, tiny_checkpoint, test_csv=test_csv)
    with pytest.raises(AdaptError, match=r"^--test_csv .*test.csv: .*broken.wav is not readable audio"):
        adapt(config, log=lambda _: None)
    assert not out.exists()


def test_a_finished_folder_keeps_its_files_and_redoes_a_lost_step(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    text = tmp_path / "punctuated.txt"
    text.write_text("\n".join(line.capitalize() + "." for line in DOMAIN) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    adapt(_quick(text, out, tiny_checkpoint), log=lambda _: None)
    made = (out / "model.pt").stat().st_mtime_ns
    lines: list[str] = []
    adapt(_quick(text, out, tiny_checkpoint), log=lines.append)
    assert (out / "model.pt").stat().st_mtime_ns == made  # not copied again
    assert "model_files" in json.loads((out / "adapt.json").read_text())["facts"]
    (out / "lm.scorer").unlink()
    (out / "model.pt").unlink()
    lines.clear()
    state = adapt(_quick(text, out, tiny_checkpoint), log=lines.append)
    assert (out / "lm.scorer").is_file() and (out / "model.pt").is_file() and "scorer" in state.steps
    assert "Redoing: scorer" in lines


def test_test_recordings_alone_are_what_is_measured_and_scorer_options_are_checked_first(
    text: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    bad = _quick(text, out, tiny_checkpoint, kenlm_bin=str(tmp_path))
    with pytest.raises(AdaptError, match=r"^--kenlm_bin .*: no lmplz"):
        adapt(bad, log=lambda _: None)
    with pytest.raises(AdaptError, match=r"^--prune 0 0 1 1: more counts than --order 3"):
        adapt(_quick(text, out, tiny_checkpoint, order=3, prune=(0, 0, 1, 1)), log=lambda _: None)
    assert not out.exists()
    test_csv = _recordings(tmp_path / "test.csv", 2)
    adapt(_quick(text, out, tiny_checkpoint, test_csv=test_csv), log=lambda _: None)
    assert json.loads((out / "report.json").read_text())["result"]["measured_on"] == "test"


def test_a_second_run_on_the_folder_is_refused(text: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "out"
    with locked(out):  # the folder and its lock file, as a run leaves them
        pass
    hold = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX); print(1)"
    other = subprocess.Popen(
        [sys.executable, "-c", hold + "; sys.stdout.flush(); time.sleep(60)", str(out / ".adapt.lock")],
        stdout=subprocess.PIPE,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == b"1\n"
        with pytest.raises(AdaptError, match=r"^--output .*: another harken adapt is running"):
            adapt(_quick(text, out, tiny_checkpoint), log=lambda _: None)
    finally:
        other.kill()
        other.wait()
    state = adapt(_quick(text, out, tiny_checkpoint), log=lambda _: None)  # the lock is free again
    assert "scorer" in state.steps


def test_settings_that_may_change_redo_only_what_they_affect(tmp_path: Path) -> None:
    state = RunState(tmp_path, {})
    for step in ("base", "scorer", "tuned", "fine-tuned"):
        state.steps[step] = StepResult(step, 10.0)
    given = {"epochs": 2, "n_trials": 3, "test_csv": None, "test_csv_digest": None, "export_onnx": False}
    assert changed_settings(state, given) is None
    state.facts["model_files"] = {"chosen": "base", "files": {}}
    assert changed_settings(state, {**given, "export_onnx": True}, print) is None
    assert "model_files" not in state.facts
    assert changed_settings(state, {**given, "export_onnx": True, "n_trials": 9}) == "tuned"
    assert changed_settings(state, {**given, "export_onnx": True, "n_trials": 9, "epochs": 9}) == "fine-tuned"
    assert state.facts["carried_seconds"] == {"fine-tuned": 10.0}  # the fine-tune's time adds up
    assert changed_settings(state, {**given, "epochs": 9, "test_csv": "t.csv"}) == "base"
    with pytest.raises(AdaptError, match=r"^--epochs 1: the folder's fine-tune already ran 9 epochs"):
        changed_settings(state, {**given, "epochs": 1})


def test_a_step_interrupted_counts_its_time_when_it_ends(
    text: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    import time

    def slow_interrupt(self: adaptation.Steps) -> object:
        time.sleep(0.3)
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adaptation.Steps, "scorer", slow_interrupt)
        with pytest.raises(KeyboardInterrupt):
            adapt(_quick(text, out, tiny_checkpoint), log=lambda _: None)
    assert json.loads((out / "adapt.json").read_text())["facts"]["carried_seconds"]["scorer"] >= 0.3
    state = adapt(_quick(text, out, tiny_checkpoint), log=lambda _: None)
    assert state.steps["scorer"].seconds >= 0.3 and not state.facts["carried_seconds"]


def test_ctrl_c_while_tuning_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import numpy as np

    from harken import tuning
    from harken.decoder import BeamSettings

    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning, "Decoder", lambda *args: None)
    monkeypatch.setattr(tuning, "rates", interrupt)
    scorer = type("FakeScorer", (), {"alpha": 0.5, "beta": 1.0})()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("optuna").addHandler(handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            decoding = (Alphabet.default(), scorer, BeamSettings())
            tuning.search_pair([np.zeros((2, 29))], ["a"], decoding, progress=False)  # type: ignore[arg-type]
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    assert not [r.getMessage() for r in records if r.levelno >= logging.WARNING]


# --- the command -------------------------------------------------------------------------------------------


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli.main(["adapt", "--show_progressbar", "false", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_the_command_refuses_in_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], text: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    base = ["--text", str(text), "--output", str(out)]
    assert "one of --checkpoint_dir and --model" in _refused(capsys, base)
    both = [*base, "--checkpoint_dir", str(tiny_checkpoint), "--model", "m.onnx"]
    assert "one of --checkpoint_dir and --model" in _refused(capsys, both)
    assert "expected a .tflite, .pt or .onnx" in _refused(capsys, [*base, "--model", "m.h5"])
    russian = tmp_path / "ru.txt"
    russian.write_text("бедняга ребят на его месте\n", encoding="utf-8")
    argv = ["--text", str(russian), "--output", str(out), "--checkpoint_dir", str(tiny_checkpoint)]
    assert "characters the model's alphabet lacks" in _refused(capsys, argv)
    missing = [*base, "--checkpoint_dir", str(tiny_checkpoint), "--csv", str(tmp_path / "none.csv")]
    assert "--csv " in _refused(capsys, missing) and not out.exists()
    assert "--dev_fraction 1.5: must be in (0, 1)" in _refused(
        capsys, [*base, "--checkpoint_dir", str(tiny_checkpoint), "--dev_fraction", "1.5"]
    )
    out.mkdir()
    (out / "adapt.json").write_text(json.dumps({"format": "harken-adapt", "inputs": {"epochs": 5}}))
    assert "holds another run's results" in _refused(
        capsys, [*base, "--checkpoint_dir", str(tiny_checkpoint)]
    )
    assert sorted(p.name for p in out.iterdir()) == ["adapt.json"]


# --- end to end --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_adapt_fine_tunes_on_speech_and_the_folder_transcribes(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four espeak-ng voices say the domain's sentences; the tiny model is fine-tuned on three of them
    (two epochs), measured on the fourth; the folder then works with ``harken transcribe``."""
    from harken.audio.synthesizer import Synthesizer

    sentences = ["turn the oven on", "boil the kettle now", "defrost the bread", "preheat the oven"]
    voices = ["en-us+m1", "en+f2", "en-gb-x-rp+m3", "en-us+f4"]
    synthesizer, rows = Synthesizer(), []
    for n, (sentence, voice) in enumerate((s, v) for v in voices for s in sentences):
        samples, rate = synthesizer.speak(sentence, voice)
        path = tmp_path / f"{n}.wav"
        audio.write(path, audio.resample(audio.from_pcm16(samples), rate, 16000), 16000)
        rows.append(f"{path},0,{sentence},{voice}")
    csv = tmp_path / "rec.csv"
    csv.write_text("wav_filename,wav_filesize,transcript,speaker\n" + "\n".join(rows) + "\n")
    text = tmp_path / "kitchen.txt"
    text.write_text("\n".join(sentences * 3) + "\n")
    out = tmp_path / "out"
    argv = ["adapt", "--text", str(text), "--csv", str(csv), "--checkpoint_dir", str(tiny_checkpoint)]
    argv += ["--output", str(out), "--min_dev", "4", "--epochs", "2", "--n_trials", "4"]
    assert cli.main([*argv, "--min_finetune_minutes", "0", "--show_progressbar", "false"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert [step["step"] for step in report["steps"]] == ["base", "scorer", "tuned", "fine-tuned"]
    assert all(step["dev"]["clips"] == 4 for step in report["steps"])
    assert (
        report["data"]["dev_split"] == "1 of 4 speakers (seed 1234)" and report["data"]["train_clips"] == 12
    )
    assert checkpoint.listing_any(out / "finetune") and (out / "model.onnx").is_file()
    assert "+ fine-tuned" in printed and "+ tuned alpha/beta" in printed
    first = report["steps"][3]
    # more epochs: the fine-tune goes on from epoch 2, the steps before it are kept, its time adds up
    more = [*argv[:-3], "3", "--n_trials", "4", "--min_finetune_minutes", "0", "--show_progressbar", "false"]
    assert cli.main(more) == 0
    assert capsys.readouterr().out.count("done by an earlier run") == 3
    again = json.loads((out / "report.json").read_text())["steps"][3]
    assert again["details"]["epochs"] == 3 and again["seconds"] > first["seconds"]
    shutil.rmtree(out / "finetune")  # the folder serves without the training checkpoints
    wav = tmp_path / "0.wav"
    assert (
        cli.main(
            ["transcribe", "--model", str(out / "model.onnx"), "--scorer", str(out / "lm.scorer"), str(wav)]
        )
        == 0
    )
    assert cli.main(["transcribe", "--model", str(out / "model.pt"), str(wav)]) == 0
    capsys.readouterr()
    assert cli.main(more) == 0  # finetune/ is gone: that step is redone, the ones before it kept
    assert "Redoing: fine-tuned" in capsys.readouterr().out and checkpoint.listing_any(out / "finetune")
