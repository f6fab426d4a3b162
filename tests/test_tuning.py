import shutil
from pathlib import Path

import pytest

from harken import cli
from harken.alphabet import Alphabet
from harken.config import CheckpointConfig, Config, DataConfig, DecoderConfig, RuntimeConfig
from harken.scorer import Scorer, ScorerError
from harken.tuning import TuneConfig, tune

from conftest import DATA


def _config(model: Path, scorer: Path | str, **decoder: object) -> Config:
    return Config(
        data=DataConfig(dev_files=str(DATA / "LDC93S1.csv"), num_workers=0),
        checkpoint=CheckpointConfig(checkpoint_dir=str(model)),
        runtime=RuntimeConfig(show_progressbar=False),
        decoder=DecoderConfig(scorer_path=str(scorer), beam_width=50, **decoder),  # type: ignore[arg-type]
    )


def test_tune_stores_a_pair_no_worse_than_the_scorers_own(ldc_noisy_model: Path, tmp_path: Path) -> None:
    scorer = tmp_path / "lm.scorer"
    shutil.copy(DATA / "pruned_lm.scorer", scorer)
    lines: list[str] = []
    search = TuneConfig(n_trials=6, lm_alpha_max=3.0, lm_beta_max=3.0)
    result = tune(_config(ldc_noisy_model, scorer), search, log=lines.append)
    assert result.trials == 6 and result.wer <= result.start_wer
    stored = Scorer(scorer, Alphabet.default())
    assert (stored.alpha, stored.beta) == (result.alpha, result.beta)
    assert any(line.startswith("Best: alpha") for line in lines)


def test_tune_needs_a_scorer_and_dev_files(ldc_noisy_model: Path) -> None:
    config = _config(ldc_noisy_model, "")
    with pytest.raises(ScorerError, match="needs --scorer"):
        tune(config, TuneConfig(n_trials=2))


def test_lm_commands(tmp_path: Path, ldc_noisy_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scorer = tmp_path / "vocab.scorer"
    build = ["lm", "build", "--text", str(DATA / "vocab.txt"), "--order", "3", "--arpa_prune", "0|0|1"]
    assert cli.main([*build, "--output", str(scorer)]) == 0
    assert "wrote" in capsys.readouterr().out
    tune = ["lm", "tune", "--checkpoint_dir", str(ldc_noisy_model)]
    dev = ["--dev_files", str(DATA / "LDC93S1.csv")]
    assert cli.main([*tune, *dev, "--scorer", str(scorer), "--n_trials", "3", "--beam_width", "20"]) == 0
    assert "Stored alpha" in capsys.readouterr().out
    for bad, message in [
        (["lm", "build", "--text", str(tmp_path / "none.txt"), "--output", str(tmp_path / "x.scorer")],
         "none.txt: no such text file"),
        ([*tune, "--scorer", str(scorer)], "needs --dev_files"),
        ([*tune, *dev, "--scorer", str(DATA / "LDC93S1.wav")], "LDC93S1.wav: not a scorer package"),
    ]:  # fmt: skip
        assert cli.main(bad) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
