"""The command line's arguments: every flag comes from an ``option()`` field of a config dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from harken import arguments
from harken.arguments import (
    AlphabetOptions,
    ShardOptions,
    TranscribeOptions,
    build_parser,
    config_from_args,
    section_options,
)
from harken.importers import IMPORTERS, ImportPaths
from harken.language_model import LmConfig
from harken.server import ServerConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "harken"


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every (sub)command's argv prefix."""
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, (*path, name))
    return found


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _parsers(build_parser())
    assert ("import", "folder") in commands and ("lm", "build") in commands and len(commands) > 15
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*command, "--help"])
        assert exited.value.code == 0, command
        assert "usage: harken" in capsys.readouterr().out


def test_every_option_field_is_a_flag_of_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    """The declared fields and the flags agree, for the classes whose every option a command takes."""
    for command, cls in [
        (["lm", "build"], LmConfig),
        (["serve"], ServerConfig),
        (["shard"], ShardOptions),
        (["alphabet"], AlphabetOptions),
        *((["import", name], entry.config) for name, entry in IMPORTERS.items()),
    ]:
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--help"])
        shown = capsys.readouterr().out
        for field in dataclasses.fields(cls):
            if "help" in field.metadata:
                flag = field.metadata["flag"] or field.name
                assert f"--{flag}" in shown, (command, flag)


def test_a_switch_does_not_swallow_the_positional_argument_after_it(tmp_path: Path) -> None:
    args = build_parser().parse_args(["transcribe", "--extended", "a.wav", "--json"])
    options = section_options(args, "transcribe", TranscribeOptions)
    assert options.audio == ("a.wav",) and options.extended and options.output_format == "json"
    args = build_parser().parse_args(["import", "folder", "--normalize", "in", "out", "--noprogress"])
    paths = section_options(args, "paths", ImportPaths)
    config = section_options(args, "importer", IMPORTERS["folder"].config)
    assert (paths.source, paths.target, paths.progress, config.normalize) == (
        Path("in"),
        Path("out"),
        False,
        True,
    )


def test_deepspeech_boolean_forms_and_parsed_values() -> None:
    for argv, expected in [
        ([], False),
        (["--early_stop"], True),
        (["--early_stop", "true"], True),
        (["--early_stop=false"], False),
        (["--noearly_stop"], False),
    ]:
        assert config_from_args(build_parser().parse_args(["train", *argv])).train.early_stop is expected
    args = build_parser().parse_args(
        ["lm", "build", "--text", "a.txt,b.csv", "--output", "x", "--arpa_prune", "0|0|1"]
    )
    lm = section_options(args, "lm", LmConfig)
    assert lm.text == (Path("a.txt"), Path("b.csv")) and lm.prune == (0, 0, 1)
    args = build_parser().parse_args(
        ["import", "synthetic", "out", "--train_voices", "en+m1, en+f2", "--clean"]
    )
    synthetic = section_options(args, "importer", IMPORTERS["synthetic"].config)
    assert synthetic.train_voices == ("en+m1", "en+f2") and synthetic.conditions is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lm", "build", "--text", "a", "--output", "x", "--prune", "a b"], "expected counts like '0 0 1'"),
        (["lm", "build", "--output", "x"], "the following arguments are required: --text"),
        (["shard", "--output", "x"], "the following arguments are required: --from"),
        (["transcribe", "a.wav", "--output_format", "doc"], "invalid choice: 'doc'"),
        (["serve", "--port", "eighty"], "invalid int value: 'eighty'"),
    ],
)
def test_bad_values_are_one_argparse_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and "Traceback" not in err


def test_only_the_command_reads_the_environment() -> None:
    """Library code takes its settings as arguments; cli.py alone reads os.environ (distributed.py is
    handed torchrun's variables)."""
    readers = [
        path.relative_to(SRC).as_posix()
        for path in sorted(SRC.rglob("*.py"))
        if re.search(r"os\.environ|os\.getenv|getenv\(", path.read_text(encoding="utf-8"))
    ]
    assert readers == ["cli.py"]


def test_the_library_defaults_do_not_depend_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from harken.config import Config

    before = Config().load_dir
    monkeypatch.setenv("XDG_DATA_HOME", "/elsewhere")
    assert Config().load_dir == before == Path("~/.local/share/harken/checkpoints").expanduser()
    assert arguments.COMMAND_OPTIONS["transcribe"]["decoder"] is None


LM = ["lm", "build", "--text", "a", "--output", "x"]


@pytest.mark.parametrize(
    ("argv", "section", "cls", "message"),
    [
        (["transcribe", "a", "--batch_segments", "0"], "transcribe", TranscribeOptions, "--batch_segments 0"),
        (["shard", "--from", "a", "--output=o", "--shard_size=0"], "shard", ShardOptions, "--shard_size 0"),
        ([*LM, "--binary_q_bits", "0"], "lm", LmConfig, "--binary_q_bits 0"),
        ([*LM, "--binary_a_bits=-1"], "lm", LmConfig, "--binary_a_bits -1"),
    ],
)
def test_out_of_range_values_are_refused_by_their_options_in_the_one_style(
    argv: list[str], section: str, cls: type, message: str
) -> None:
    """(review of #18) Every option's range is checked where it is declared, in the one style: today
    --batch_segments and --shard_size are checked deep in the library ("batch_segments must be at least 1,
    got 0"; "--shard_size must be at least 1, got 0") and lm build's --binary_q_bits / --binary_a_bits not
    at all (build_binary fails with "ERROR", or takes -1)."""
    args = build_parser().parse_args(argv)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}: must be"):
        section_options(args, section, cls)


@pytest.mark.parametrize("flag", ["--lm_alpha", "--lm_beta"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_decoder_weights_must_be_finite(flag: str, value: str) -> None:
    """(review of #18) --lm_alpha nan / --lm_beta inf are taken and decode to an empty transcript."""
    args = build_parser().parse_args(["transcribe", "a.wav", f"{flag}={value}"])
    with pytest.raises(ValueError, match=f"^{flag} {value}: must be"):
        config_from_args(args)
