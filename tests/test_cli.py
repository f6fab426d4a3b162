import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    for group in ("model geometry and dropout", "data:", "checkpoints:", "training, schedule and reports:"):
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
    assert config.train.early_stop and not config.train.show_progressbar and not config.data.reverse_train
    assert config.train.learning_rate == 0.0001 and config.data.train_files == "a.csv,b.csv"
    assert config.train.epochs == 75  # DeepSpeech's default where nothing was given


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
            "no-such-dir: no such checkpoint directory",
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
    assert missing.returncode == 1 and "x.wav: no such file" in missing.stderr
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
        (["--hot_words", "water:-40"], "hot-words need a scorer"),
        (["--scorer", wav], "LDC93S1.wav: not a scorer package"),
        (["--scorer", scorer, "--hot_words", "water"], "'water' is not word:boost"),
        (["--beam_width", "0"], "--beam_width 0: must be at least 1"),
        (["--candidate_transcripts", "0"], "--candidate_transcripts must be at least 1"),
        (["--batch_segments", "0"], "batch_segments must be at least 1"),
    ]:
        assert cli.main([*base, *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
