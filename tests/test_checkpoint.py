from pathlib import Path

import pytest
import torch

from harken import checkpoint
from harken.alphabet import Alphabet
from harken.config import Config, ModelConfig
from harken.train import build, save

from conftest import ldc_config


def _run(tmp_path: Path, n_hidden: int = 16):  # type: ignore[no-untyped-def]
    return build(ldc_config(tmp_path, epochs=1, n_hidden=n_hidden), log=lambda _: None)


def test_save_is_atomic_and_prunes(tmp_path: Path) -> None:
    run = _run(tmp_path)
    for step in range(1, 8):
        run.progress.step = step
        save(run)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"train-{s}.pt" for s in (3, 4, 5, 6, 7)]  # max_to_keep 5
    payload = checkpoint.read(tmp_path / "train-7.pt")
    assert payload["progress"]["step"] == 7 and payload["alphabet"] == list(Alphabet.default().symbols)
    assert checkpoint.stored_config(payload) == run.config


def test_failed_write_leaves_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(tmp_path)
    run.progress.step = 1
    save(run)

    def dying_save(obj: object, handle) -> None:  # type: ignore[no-untyped-def]
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    run.progress.step = 2
    with pytest.raises(KeyboardInterrupt):
        save(run)
    assert [p.name for p in tmp_path.iterdir()] == ["train-1.pt"]
    found = checkpoint.newest(tmp_path, (checkpoint.TRAIN,))
    assert found is not None and found[0].name == "train-1.pt"


def test_damaged_newest_falls_back_to_previous(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.progress.step = 1
    save(run)
    (tmp_path / "train-2.pt").write_bytes(b"garbage")
    warnings: list[str] = []
    found = checkpoint.newest(tmp_path, (checkpoint.TRAIN,), warn=warnings.append)
    assert found is not None and found[0].name == "train-1.pt"
    assert "train-2.pt: not a readable checkpoint" in warnings[0]


def test_geometry_mismatch_names_the_dimension(tmp_path: Path) -> None:
    run = _run(tmp_path, n_hidden=16)
    run.progress.step = 1
    path = save(run)
    payload = checkpoint.read(path)
    other = Config(model=ModelConfig(n_hidden=32))
    with pytest.raises(checkpoint.CheckpointError, match=r"n_hidden 16, this run asks for 32"):
        checkpoint.check_compatible(path, payload, other, Alphabet.default())
    with pytest.raises(checkpoint.CheckpointError, match=r"alphabet has 28 symbols, this run's has 3"):
        checkpoint.check_compatible(path, payload, run.config, Alphabet(["a", "b", "c"]))
    swapped = Alphabet([*Alphabet.default().symbols[:-2], "'", "z"])
    with pytest.raises(checkpoint.CheckpointError, match=r"has 'z' at label 26"):
        checkpoint.check_compatible(path, payload, run.config, swapped)


def test_load_model_and_errors(tmp_path: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint directory"):
        checkpoint.load_model(tmp_path / "none")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint found"):
        checkpoint.load_model(tmp_path)
    run = _run(tmp_path)
    run.progress.step = 3
    save(run)
    loaded = checkpoint.load_model(tmp_path)
    assert loaded.path.name == "train-3.pt" and not loaded.model.training
    for name, value in run.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], value)
    (tmp_path / "best_dev-9.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint found"):
        checkpoint.load_model(tmp_path, mode="best")
    torch.save({"something": 1}, tmp_path / "train-4.pt")
    assert checkpoint.load_model(tmp_path, mode="last").path.name == "train-3.pt"
