import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from harken import cli
from harken.config import Config

from conftest import DATA, LDC93S1_TEXT


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harken", *argv], capture_output=True, text=True, timeout=300
    )


def test_train_help_lists_deepspeech_flags_grouped_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--train_files",
        "--dev_files",
        "--test_files",
        "--train_batch_size",
        "--epochs",
        "--learning_rate",
        "--dropout_rate",
        "--dropout_rate2",
        "--relu_clip",
        "--n_hidden",
        "--audio_sample_rate",
        "--feature_win_len",
        "--feature_win_step",
        "--n_context",
        "--alphabet_config_path",
        "--checkpoint_dir",
        "--load_checkpoint_dir",
        "--save_checkpoint_dir",
        "--checkpoint_secs",
        "--max_to_keep",
        "--summary_dir",
        "--report_count",
        "--random_seed",
        "--limit_train",
        "--early_stop",
        "--es_epochs",
        "--es_min_delta",
        "--reduce_lr_on_plateau",
        "--plateau_epochs",
        "--plateau_reduction",
        "--show_progressbar",
        "--bidirectional",
    ):
        assert flag in text, flag
    for group in (
        "model geometry and dropout",
        "data:",
        "checkpoints:",
        "training and schedule:",
        "device, progress",
    ):
        assert group in text
    assert "(default: 2048)" in text and "(default: 75)" in text and "(default: 0.001)" in text


def test_flags_build_the_config() -> None:
    args = cli.build_parser().parse_args(
        [
            "train",
            "--n_hidden",
            "64",
            "--early_stop",
            "--noshow_progressbar",
            "--reverse_train=false",
            "--bidirectional",
            "true",
            "--train_files",
            "a.csv,b.csv",
            "--learning_rate",
            "0.0001",
        ]
    )
    config = cli.config_from_args(args)
    assert isinstance(config, Config)
    assert config.model.n_hidden == 64 and config.model.bidirectional
    assert config.train.early_stop and not config.runtime.show_progressbar and not config.data.reverse_train
    assert config.train.learning_rate == 0.0001 and config.data.train_files == "a.csv,b.csv"
    assert config.train.epochs == 75  # DeepSpeech's default where nothing was given


def test_a_preset_fills_what_was_not_given() -> None:
    parse = cli.build_parser().parse_args
    plain = cli.config_from_args(parse(["train"]))
    assert plain.train.learning_rate_schedule == "constant" and plain.data.augment == ()
    preset = cli.config_from_args(parse(["train", "--preset", "small_data"]))
    assert preset.train.learning_rate_schedule == "cosine" and preset.model.dropout_rate == 0.1
    assert (
        len(preset.data.augment) == 6 and preset.data.shuffle_batches and preset.train.preset == "small_data"
    )
    given = [
        "train",
        "--preset",
        "small_data",
        "--learning_rate_schedule",
        "constant",
        "--augment",
        "tempo[p=1]",
    ]
    mine = cli.config_from_args(parse(given))
    assert mine.train.learning_rate_schedule == "constant" and mine.data.augment == ("tempo[p=1]",)
    with pytest.raises(SystemExit):
        parse(["train", "--preset", "big_data"])


def test_bad_bool_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--early_stop", "maybe"])
    assert stop.value.code == 2 and "expected true or false" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--train_files", "nowhere.csv"], "nowhere.csv: no such CSV file"),
        (["train"], "no --train_files given (nor --test_files"),
        (
            ["train", "--train_files", str(DATA / "LDC93S1.csv"), "--alphabet_config_path", "nope.txt"],
            "nope.txt: cannot read the alphabet file",
        ),
        (
            ["evaluate", "--checkpoint_dir", "no-such-dir", "--test_files", str(DATA / "LDC93S1.csv")],
            "no-such-dir: no such checkpoint directory",
        ),
        (["evaluate", "--checkpoint_dir", "x"], "no --test_files given"),
        (
            ["transcribe", "--checkpoint_dir", "no-such-dir", "a.wav"],
            "no-such-dir: no such checkpoint directory (--checkpoint_dir; a model file goes to --model)",
        ),
        (
            ["transcribe", "--checkpoint_dir", str(DATA / "LDC93S1.csv"), "a.wav"],
            f"{DATA / 'LDC93S1.csv'}: not a checkpoint directory (--checkpoint_dir; a model file goes to",
        ),
        (
            ["transcribe", "--model", str(DATA / "LDC93S1.wav"), "a.wav"],
            f"{DATA / 'LDC93S1.wav'}: not a model (expected a checkpoint directory, .onnx, .tflite or .pt)",
        ),
        (["transcribe", "--model", str(DATA / "LDC93S1.csv"), "a.wav"], "LDC93S1.csv: not a model (expected"),
        (
            ["transcribe", "--model", "nothing.onnx", "a.wav"],
            "nothing.onnx: no such model file or checkpoint",
        ),
        (
            ["transcribe", "--model", "x.onnx", "--output_dir", str(DATA / "LDC93S1.csv"), "a.wav"],
            f"{DATA / 'LDC93S1.csv'}: a file, not a folder (--output_dir {DATA / 'LDC93S1.csv'})",
        ),
        (
            ["train", "--train_files", str(DATA / "LDC93S1.csv"), "--device", "cuda"],
            "this machine has no CUDA GPU",
        ),
        (
            ["train", "--feature_win_step", "0"],
            "--feature_win_step 0: must be a positive number of milliseconds",
        ),
        (["train", "--n_mfcc", "50"], "--n_mfcc 50: must be 1 to n_mel_channels, 40"),
        (["train", "--n_hidden", "0"], "--n_hidden 0: must be positive"),
        (["train", "--plateau_epochs", "0"], "--plateau_epochs 0: must be 1 or more"),
        (["train", "--dropout_rate", "1.5"], "--dropout_rate 1.5: must be -1 or in [0, 1)"),
        (["train", "--num_workers", "99999999999999999999"], "must be -1 (automatic) to 128"),
    ],
)
def test_bad_input_gives_one_line(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main([*argv, "--checkpoint_dir", str(tmp_path / "no-such-dir")] if argv[0] == "train" else argv)
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_out_of_alphabet_transcripts_are_counted_per_sample(tmp_path: Path) -> None:
    csv = tmp_path / "upper.csv"
    csv.write_text(f"wav_filename,wav_filesize,transcript\n{DATA / 'LDC93S1.wav'},0,She had your dark suit\n")
    result = _run(
        "train", "--train_files", str(csv), "--checkpoint_dir", str(tmp_path / "c"), "--n_hidden", "8"
    )
    assert result.returncode == 2
    assert "skipped 1: characters outside the alphabet" in result.stdout and "'S'" in result.stdout
    assert result.stderr.strip().startswith("harken: error: train: no usable samples")
    assert "Traceback" not in result.stderr
    assert "characters outside the alphabet" in (tmp_path / "c" / "skipped-train.csv").read_text()


@pytest.mark.slow
def test_train_evaluate_transcribe_commands(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    csv = str(DATA / "LDC93S1.csv")
    common = ["--checkpoint_dir", str(ckpt), "--noshow_progressbar"]
    trained = _run(
        "train", "--train_files", csv, "--dev_files", csv, "--n_hidden", "32", "--epochs", "3", *common
    )
    assert trained.returncode == 0, trained.stderr
    assert "Epoch 3/3" in trained.stdout and (ckpt / "loss.png").is_file()
    out = tmp_path / "results.json"
    elsewhere = ["--checkpoint_dir", str(tmp_path / "empty"), "--load_checkpoint_dir", str(ckpt)]
    evaluated = _run(
        "evaluate",
        "--test_files",
        csv,
        "--test_output_file",
        str(out),
        "--report_count",
        "1",
        *elsewhere,
        "--noshow_progressbar",
    )
    assert f"Testing {ckpt}" in evaluated.stdout
    assert evaluated.returncode == 0, evaluated.stderr
    assert "WER:" in evaluated.stdout and "Best WER" in evaluated.stdout and "Worst WER" in evaluated.stdout
    (report,) = json.loads(out.read_text())
    assert report["samples"][0]["src"] == LDC93S1_TEXT and report["cer"] >= 0
    missing = _run(
        "transcribe", "--checkpoint_dir", str(ckpt), str(DATA / "LDC93S1.wav"), str(tmp_path / "x.wav")
    )
    assert missing.returncode == 2 and "x.wav: no such file" in missing.stderr
    assert f"{DATA / 'LDC93S1.wav'}:" in missing.stdout


def test_import_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "import",
        "synthetic",
        str(tmp_path),
        "--n_sentences",
        "5",
        "--train_voices",
        "en+m1,en-us+f2",
        "--test_voices",
        "en-us+m4",
        "--noprogress",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert [Path(line).name for line in out.splitlines()[-3:]] == ["train.csv", "dev.csv", "test.csv"]
    argv[argv.index("en-us+m4")] = "en+nosuchvoice"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "nosuchvoice" in err and err.count("\n") == 1


def test_transcribe_with_scorer_candidates_and_hot_words(
    ldc_noisy_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav, scorer = str(DATA / "LDC93S1.wav"), str(DATA / "pruned_lm.scorer")
    base = ["transcribe", "--checkpoint_dir", str(ldc_noisy_model), wav]
    assert cli.main([*base, "--beam_width", "1"]) == 0
    assert capsys.readouterr().out.strip() != LDC93S1_TEXT
    assert cli.main([*base, "--scorer", scorer, "--candidate_transcripts", "2", "--json"]) == 0
    (segment,) = json.loads(capsys.readouterr().out)["segments"]
    assert segment["text"] == LDC93S1_TEXT and len(segment["alternatives"]) == 1
    assert segment["alternatives"][0]["text"] != LDC93S1_TEXT
    assert cli.main([*base, "--scorer_path", scorer, "--hot_words", "water:-40", "--extended"]) == 0
    assert "water" not in capsys.readouterr().out.split()
    for bad, message in [
        (["--hot_words", "watér:-40"], "hot word 'watér': the model's alphabet cannot spell it"),
        (["--hot_words", "dark suit:inf"], "hot word 'dark suit': boost inf"),
        (["--scorer", wav], "LDC93S1.wav: not a scorer package"),
        (["--scorer", scorer, "--hot_words", "water"], "'water' is not word:boost"),
        (["--beam_width", "-1"], "--beam_width -1: must be 0 (automatic) to 10000"),
        (["--candidate_transcripts", "0"], "--candidate_transcripts 0: must be at least 1"),
        (["--batch_segments", "0"], "--batch_segments 0: must be 1 to 64"),
    ]:
        assert cli.main([*base, *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained checkpoint (n_hidden 8): for what does not depend on the words it transcribes."""
    from harken.train import build, save

    from conftest import ldc_config

    directory = tmp_path_factory.mktemp("tiny")
    save(build(ldc_config(directory, epochs=1, n_hidden=8), log=lambda _: None))
    return directory


def test_transcribe_writes_each_input_to_its_own_file(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same-named inputs in one folder and in two, and an input given twice (once through its folder)."""
    samples, rate = soundfile.read(str(DATA / "LDC93S1.wav"), dtype="int16")
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for path in (a / "x.wav", a / "x.ogg", b / "x.wav", b / "y.flac"):
        path.parent.mkdir(exist_ok=True)
        soundfile.write(str(path), samples[:rate], rate)  # 1 s each
    inputs = [a / "x.wav", a / "x.ogg", b / "x.wav", b, a / "x.wav"]
    base = ["transcribe", "--checkpoint_dir", str(tiny_model), "--output_dir", str(out), "--json"]
    assert cli.main([*base, *map(str, inputs)]) == 0
    written = {path.relative_to(out): json.loads(path.read_text())["path"] for path in out.rglob("*.json")}
    assert written == {
        Path("a/x.wav.json"): str(a / "x.wav"),
        Path("a/x.ogg.json"): str(a / "x.ogg"),
        Path("b/x.json"): str(b / "x.wav"),
        Path("b/y.json"): str(b / "y.flac"),
    }
    assert capsys.readouterr().err.splitlines() == [
        f"harken: note: {b / 'x.wav'} is given more than once: transcribed once",
        f"harken: note: {a / 'x.wav'} is given more than once: transcribed once",
    ]
    soundfile.write(str(a / "X.wav"), samples[:rate], rate)  # X.txt and x.txt: one file on macOS
    elsewhere = tmp_path / "elsewhere"
    argv = ["transcribe", "--checkpoint_dir", str(tiny_model), "--output_dir", str(elsewhere)]
    assert cli.main([*argv, str(a / "X.wav"), str(a / "x.wav")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"harken: error: {a / 'X.wav'} and {a / 'x.wav'} would both be written to")
    assert err.count("\n") == 1 and not elsewhere.exists()  # refused before anything was written


def test_transcribe_exit_status_says_a_file_failed_or_was_truncated(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: 0 when every file was transcribed whole, 2 when one could not be or only in part."""
    wav = str(DATA / "LDC93S1.wav")
    cut = tmp_path / "cut.wav"
    cut.write_bytes((DATA / "LDC93S1.wav").read_bytes()[:2000])
    base = ["transcribe", "--checkpoint_dir", str(tiny_model)]
    assert cli.main([*base, wav]) == 0
    assert capsys.readouterr().err == ""
    assert cli.main([*base, wav, str(cut)]) == 2
    captured = capsys.readouterr()
    assert (
        captured.err
        == f"harken: warning: {cut}: truncated: the header announces 2.92 s, the file holds 0.06 s\n"
    )
    assert [line.split(":")[0] for line in captured.out.splitlines()] == [wav, str(cut)]  # both transcribed
    assert cli.main([*base, wav, str(tmp_path / "missing.wav")]) == 2
    assert capsys.readouterr().err == f"harken: error: {tmp_path / 'missing.wav'}: no such file\n"
    zeros = tmp_path / "silence.wav"
    soundfile.write(str(zeros), np.zeros(16000, np.int16), 16000)
    assert cli.main([*base, "--output_dir", str(tmp_path / "out"), str(zeros)]) == 0


def test_transcribe_without_a_model_names_the_flags(tmp_path: Path) -> None:
    """No --model, no --checkpoint_dir, and no checkpoints in the default directory."""
    result = subprocess.run(
        [sys.executable, "-m", "harken", "transcribe", str(DATA / "LDC93S1.wav")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "XDG_DATA_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "harken: error: no model given: name one with --model (a .onnx, .tflite or .pt file) or "
        f"--checkpoint_dir (the default, {tmp_path / 'harken' / 'checkpoints'}, does not exist)\n"
    )


def test_serve_names_what_is_wrong_with_its_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    for argv, message in [
        (["serve", "--model", str(text)], "notes.txt: not a model (expected a checkpoint directory"),
        (["serve", "--model", str(tmp_path / "gone.onnx")], "gone.onnx: no such model file"),
        (
            ["serve", "--checkpoint_dir", str(tmp_path / "none")],
            "no such checkpoint directory (--checkpoint_dir",
        ),
    ]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_a_closed_pipe_ends_quietly() -> None:
    # `harken ... | head -1`: the reader leaves while harken still writes; no "Broken pipe" error line
    script = (
        "import sys; from harken import cli\n"
        "def chatty(args):\n"
        "    for _ in range(200000): print('a line of output ' * 4)\n"
        "    return 0\n"
        "cli.HANDLERS['alphabet'] = chatty\n"
        "sys.exit(cli.main(['alphabet', '--from', 'x.csv']))\n"
    )
    shell = f'{sys.executable} -c "$SCRIPT" | head -1'
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        env={**os.environ, "SCRIPT": script},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.startswith("a line of output"), done
    assert done.stderr == "", done.stderr
    assert done.returncode == 141


def test_a_broken_pipe_that_is_not_stdout_is_an_error(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def upload(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a remote store's connection went away

    monkeypatch.setitem(cli.HANDLERS, "alphabet", upload)
    assert cli.main(["alphabet", "--from", "x.csv"]) == 2
    assert "harken: error: Broken pipe" in capsys.readouterr().err


def test_train_exports_with_export_dir_as_deepspeech_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`harken train --export_dir X` exports the trained model (DeepSpeech's training did); an export
    option without --export_dir is refused before any training."""
    common = ["train", "--train_files", str(DATA / "LDC93S1.csv"), "--n_hidden", "16", "--epochs", "1"]
    common += ["--noshow_progressbar", "--num_workers", "0", "--checkpoint_dir", str(tmp_path / "ckpt")]
    assert cli.main([*common, "--quantize", "int8"]) == 2
    assert "--quantize is an export option: give --export_dir too" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()
    assert cli.main([*common, "--export_dir", str(tmp_path / "out")]) == 0
    assert "Wrote " in capsys.readouterr().out and (tmp_path / "out" / "model.onnx").is_file()
