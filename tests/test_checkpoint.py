from pathlib import Path

import pytest
import torch

from harken import checkpoint
from harken import config as config_module
from harken.alphabet import Alphabet
from harken.config import Config, FeatureConfig, ModelConfig
from harken.dims import ModelDims
from harken.train import build, save

from conftest import as_format_1, ldc_config


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
    assert payload["progress"]["step"] == 7 and payload["dims"]["alphabet"] == list(
        Alphabet.default().symbols
    )
    assert checkpoint.stored_run(payload) == run.config


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


def _format_1(config: Config, alphabet: Alphabet, weights: dict[str, torch.Tensor]) -> dict[str, object]:
    """A checkpoint's payload as harken's make_payload wrote it before the dims were stored apart."""
    return {
        "format": checkpoint.FORMAT,
        "version": 1,
        "config": config_module.to_dict(config),
        "alphabet": alphabet.serialize(),
        "model": weights,
        "optimizer": None,
        "progress": {},
        "rng": {"torch": torch.get_rng_state()},
    }


def test_checkpoints_store_the_dims_apart_from_the_run(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.progress.step = 1
    payload = checkpoint.read(save(run))
    assert payload["version"] == 2 and "config" not in payload and "alphabet" not in payload
    assert ModelDims.from_dict(payload["dims"]) == ModelDims.from_config(run.config, run.alphabet)
    assert "features" not in payload["run"] and "n_hidden" not in payload["run"]["model"]
    assert payload["run"]["data"]["train_files"] == run.config.data.train_files
    assert payload["run"]["model"]["dropout_rate"] == run.config.model.dropout_rate
    assert checkpoint.stored_dims(payload) == ModelDims.from_config(run.config, run.alphabet)
    assert checkpoint.stored_run(payload) == run.config
    loaded = checkpoint.load_file(tmp_path / "train-1.pt")
    assert loaded.dims.n_hidden == 16 and loaded.alphabet == run.alphabet and loaded.run == run.config
    newer = {**payload, "version": checkpoint.VERSION + 1}
    torch.save(newer, tmp_path / "train-2.pt")
    with pytest.raises(checkpoint.CheckpointError, match=r"written by a newer harken \(format 3\)"):
        checkpoint.read(tmp_path / "train-2.pt")


def test_format_1_checkpoints_still_load_and_are_checked(tmp_path: Path) -> None:
    """A checkpoint written before the dims were stored apart (one config holding the run's settings and
    the model's dimensions, the alphabet beside it) loads, and a run that differs from it is refused as
    before, naming the flag."""
    run = _run(tmp_path / "new", n_hidden=16)
    old = tmp_path / "old"
    old.mkdir()
    payload = _format_1(run.config, run.alphabet, run.model.state_dict())
    torch.save(payload, old / "train-5.pt")
    for loaded in (checkpoint.load_model(old), checkpoint.load_file(old / "train-5.pt")):
        assert loaded.dims == ModelDims.from_config(run.config, run.alphabet) and loaded.run == run.config
        for name, value in run.model.state_dict().items():
            torch.testing.assert_close(loaded.model.state_dict()[name], value)
    stored = checkpoint.read(old / "train-5.pt")
    assert checkpoint.stored_alphabet(stored) == run.alphabet
    checkpoint.check_compatible(old, stored, run.config, run.alphabet)
    with pytest.raises(
        checkpoint.CheckpointError, match=r"n_hidden 16, this run asks for 32 \(pass --n_hidden 16"
    ):
        checkpoint.check_compatible(old, stored, Config(model=ModelConfig(n_hidden=32)), run.alphabet)
    with pytest.raises(checkpoint.CheckpointError, match=r"feature_norm none, this run asks for mean"):
        mean = Config(features=FeatureConfig(feature_norm="mean"), model=ModelConfig(n_hidden=16))
        checkpoint.check_compatible(old, stored, mean, run.alphabet)
    with pytest.raises(checkpoint.CheckpointError, match=r"alphabet has 28 symbols, this run's has 3 "):
        checkpoint.check_compatible(old, stored, run.config, Alphabet(["a", "b", "c"]))
    del payload["config"]["features"]["feature_norm"]  # from before --feature_norm: DeepSpeech's front end
    auto = Config(features=FeatureConfig(feature_norm="auto"))
    assert checkpoint.resolve_front_end(auto, payload).features.feature_norm == "none"
    assert checkpoint.stored_dims(payload).features.feature_norm == "none"


def test_as_format_1_writes_what_format_1_was(tmp_path: Path) -> None:
    """The tests' helper that turns a new payload into a format-1 one gives what the old code wrote."""
    run = _run(tmp_path)
    run.progress.step = 1
    payload = checkpoint.read(save(run))
    old = as_format_1(payload)
    expected = _format_1(run.config, run.alphabet, payload["model"])
    assert {k: old[k] for k in ("format", "version", "config", "alphabet")} == {
        k: expected[k] for k in ("format", "version", "config", "alphabet")
    }
    assert checkpoint.stored_dims(old) == checkpoint.stored_dims(payload)


def test_import_keeps_the_run_of_a_checkpoint_and_stores_none_for_a_model(tmp_path: Path) -> None:
    run = _run(tmp_path / "a")
    run.progress.step = 1
    path = save(run)
    _, loaded = checkpoint.import_model(path, tmp_path / "b")
    payload = checkpoint.read(tmp_path / "b" / "train-0.pt")
    assert payload["version"] == 2 and checkpoint.stored_run(payload) == run.config
    assert checkpoint.stored_dims(payload) == loaded.dims
    bare = checkpoint.model_payload(loaded.dims, loaded.model.state_dict())
    assert bare["run"] is None and checkpoint.stored_run(bare) is None


@pytest.mark.parametrize("drop", ["dims", "model"])
def test_a_format_2_checkpoint_missing_a_part_is_a_checkpoint_error(tmp_path: Path, drop: str) -> None:
    """(review of #18) A version-2 payload without its dims goes down the format-1 path and ends in
    KeyError: 'config' (a traceback from `harken transcribe --model x.pt`), not a one-line error."""
    source = Path(__file__).parent / "data" / "tf_checkpoint" / "deepspeech-0.9"
    path, _ = checkpoint.import_model(source, tmp_path / "imported")
    payload = torch.load(path, weights_only=False)
    assert payload["version"] == 2
    del payload[drop]
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load_file(broken)
