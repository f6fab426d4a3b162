"""Shared fixtures: the repo's own small corpus (tests/data) and a model overfitted on LDC93S1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harken.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig

DATA = Path(__file__).parent / "data"
# A real DeepSpeech-family model (ArmSpeech, Coqui STT, hybrid int8): `make test` fetches it from PyPI once.
ARMSPEECH = Path(
    os.environ.get("HARKEN_ARMSPEECH", Path(__file__).parents[1] / ".cache/armspeech/model.tflite")
)
LDC93S1_TEXT = "she had your dark suit in greasy wash water all year"


def ldc_config(
    checkpoint_dir: Path,
    epochs: int,
    n_hidden: int = 100,
    dropout: float = 0.0,
    files: str = "",
    **train: object,
) -> Config:
    """DeepSpeech's LDC93S1 smoke test: one file, batch 1, n_hidden 100 (no dropout: it converges faster)."""
    return Config(
        model=ModelConfig(n_hidden=n_hidden, dropout_rate=dropout),
        data=DataConfig(train_files=files or str(DATA / "LDC93S1.csv"), num_workers=0),
        checkpoint=CheckpointConfig(checkpoint_dir=str(checkpoint_dir)),
        train=TrainConfig(epochs=epochs, learning_rate=0.003, show_progressbar=False, **train),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def ldc_noisy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LDC93S1 after 130 of the 200 epochs: nearly there, so its greedy transcript has a few wrong letters
    ("... in reasy wash waeral year") — what a scorer is for."""
    from harken.train import train

    directory = tmp_path_factory.mktemp("ldc93s1-130")
    train(ldc_config(directory, epochs=130), log=lambda _: None)
    return directory


@pytest.fixture(scope="session")
def ldc_model(tmp_path_factory: pytest.TempPathFactory, ldc_noisy_model: Path) -> Path:
    """A checkpoint directory holding a model overfitted on LDC93S1 (200 epochs, about 15 s on 2 cores):
    the 130-epoch model, trained on (resuming is bit-identical to training straight through)."""
    import shutil

    from harken.train import train

    directory = tmp_path_factory.mktemp("ldc93s1")
    shutil.copytree(ldc_noisy_model, directory, dirs_exist_ok=True)
    train(ldc_config(directory, epochs=200), log=lambda _: None)
    return directory
