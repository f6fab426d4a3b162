"""DeepSpeech's TensorFlow checkpoints imported without TensorFlow.

The checkpoints in tests/data/tf_checkpoint/ were written by TensorFlow itself (tensorflow-cpu 2.21,
``tf.compat.v1.train.Saver``) with DeepSpeech's variable names and shapes, by
tests/data/make_tf_checkpoint.py. Its ``variables()`` and ``inputs()`` give the weights it saved, and
``expected.npy`` holds TensorFlow's own output of DeepSpeech's graph (BlockLSTM, the op behind
DeepSpeech's LSTMBlockFusedCell) on those inputs.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from harken import checkpoint, cli
from harken.alphabet import Alphabet
from harken.interop.crc32c import _bytes_loop, crc32c
from harken.interop.tf_checkpoint import (
    FOOTER_SIZE,
    Checkpoint,
    TensorEntry,
    _deepspeech_cell,
    _handle,
    read_checkpoint,
    resolve_prefix,
)
from harken.interop.tflite import InteropError
from harken.model import DeepSpeech

from conftest import DATA

FIXTURES = DATA / "tf_checkpoint"
DS09, DS05, OTHER = FIXTURES / "deepspeech-0.9", FIXTURES / "deepspeech-0.5", FIXTURES / "not-deepspeech"
PREFIX = "best_dev-1466475"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_tf_checkpoint", DATA / "make_tf_checkpoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
CASES = {  # fixture: (LSTM scope, forget bias TensorFlow's graph added, seed of its weights)
    DS09: (GEN.LSTM_09, 0.0, 9),
    DS05: (GEN.LSTM_05, 1.0, 5),
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def deepspeech_numpy(
    weights: dict[str, np.ndarray], scope: str, forget_bias: float, x: np.ndarray
) -> np.ndarray:
    """DeepSpeech's graph in float64 numpy from the TensorFlow-named weights: log-probs [time, classes]."""
    w = {name: value.astype(np.float64) for name, value in weights.items()}

    def dense(layer: str, value: np.ndarray, relu: bool = True) -> np.ndarray:
        out = value @ w[f"{layer}/weights"] + w[f"{layer}/bias"]
        return np.minimum(np.maximum(out, 0), 20) if relu else out

    first = dense("layer_1", x.astype(np.float64))
    assert (first == 20).any() and (first == 0).any()  # the clip and the ReLU both matter here
    hidden = dense("layer_3", dense("layer_2", first))
    n = hidden.shape[1]
    h, c, outputs = np.zeros(n), np.zeros(n), []
    for frame in hidden:
        i, j, f, o = np.split(np.concatenate([frame, h]) @ w[f"{scope}/kernel"] + w[f"{scope}/bias"], 4)
        c = _sigmoid(f + forget_bias) * c + _sigmoid(i) * np.tanh(j)
        h = _sigmoid(o) * np.tanh(c)
        outputs.append(h)
    logits = dense("layer_6", dense("layer_5", np.array(outputs)), relu=False)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def _harken_log_probs(model: DeepSpeech) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(GEN.inputs())[None])[0][0].numpy()


def test_every_tensor_reads_back_as_tensorflow_saved_it() -> None:
    bundle = Checkpoint(DS09 / PREFIX)
    saved = GEN.variables(GEN.LSTM_09, 9)
    for name, value in saved.items():
        assert bundle.tensor(name).dtype == np.float32
        np.testing.assert_array_equal(bundle.tensor(name), value, err_msg=name)
        np.testing.assert_array_equal(bundle.tensor(f"{name}/Adam"), 0 * value)  # Adam's slots, never used
    assert bundle.shards == 1 and not bundle.big_endian
    assert bundle.tensor("global_step").dtype == np.int64 and int(bundle.tensor("global_step")) == 1466475
    assert float(bundle.tensor("learning_rate")) == pytest.approx(0.001)
    assert {"beta1_power", "beta2_power"} <= bundle.entries.keys()
    assert len(bundle.entries) == 3 * len(saved) + 4


@pytest.mark.parametrize("fixture", [DS09, DS05], ids=["deepspeech-0.9", "deepspeech-0.5"])
def test_imported_model_computes_deepspeechs_graph(fixture: Path) -> None:
    """harken's forward pass equals a numpy DeepSpeech and TensorFlow's own kernels on the same weights."""
    scope, forget_bias, seed = CASES[fixture]
    imported = read_checkpoint(fixture)
    assert imported.metadata["lstm"] == scope and imported.metadata["forget_bias"] == forget_bias
    assert imported.dims.n_hidden == GEN.N_HIDDEN and imported.dims.features.n_context == 9
    assert imported.dims.features.feature_norm == "none"
    assert imported.dims.features.audio_sample_rate == 16000 and imported.alphabet == Alphabet.default()
    model = DeepSpeech(imported.dims.features, imported.dims.model_config(), imported.alphabet.n_classes)
    model.load_state_dict(imported.state_dict)  # every parameter present, every shape right
    ours = _harken_log_probs(model)
    reference = deepspeech_numpy(GEN.variables(scope, seed), scope, forget_bias, GEN.inputs())
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours, np.load(fixture / "expected.npy"), atol=1e-5, rtol=0)
    if forget_bias:  # the folded forget bias matters: without it the output is another one
        wrong = deepspeech_numpy(GEN.variables(scope, seed), scope, 0.0, GEN.inputs())
        assert np.abs(ours - wrong).max() > 1e-3


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_where_the_checkpoint_is_found(tmp_path: Path) -> None:
    # The `checkpoint` file names an absolute path of the machine it was trained on: found beside it.
    assert resolve_prefix(DS09) == DS09 / PREFIX
    for given in (DS09 / PREFIX, DS09 / f"{PREFIX}.index", DS09 / f"{PREFIX}.data-00000-of-00001"):
        assert resolve_prefix(given) == DS09 / PREFIX
    assert resolve_prefix(DS05) == DS05 / PREFIX  # no state file: the newest best_dev-N.index
    assert resolve_prefix(tmp_path) is None and resolve_prefix(DS09 / "expected.npy") is None
    many = _copy(DS09, tmp_path / "many")
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(many / f"{PREFIX}{suffix}", many / f"train-1466480{suffix}")
    (many / "checkpoint").write_text('model_checkpoint_path: "train-1466480"\n')
    assert resolve_prefix(many) == many / "train-1466480"
    (many / "best_dev_checkpoint").write_text(f'model_checkpoint_path: "/elsewhere/{PREFIX}"\n')
    assert resolve_prefix(many) == many / PREFIX  # as DeepSpeech evaluated: the best dev checkpoint first


def test_flags_and_alphabet_beside_the_checkpoint(tmp_path: Path) -> None:
    release = _copy(DS09, tmp_path / "release")
    (release / "flags.txt").write_text("--audio_sample_rate=8000\n--feature_win_len=32\n--relu_clip=10.0\n")
    symbols = [" ", *"abcdefghijklmnopqrstuvwxyz"[::-1], "'"]
    (release / "alphabet.txt").write_text("\n".join(symbols) + "\n")
    imported = read_checkpoint(release / PREFIX)
    assert imported.dims.features.audio_sample_rate == 8000 and imported.dims.relu_clip == 10.0
    assert imported.alphabet.symbols == tuple(symbols)
    assert read_checkpoint(release, DATA / "alphabet.txt").alphabet == Alphabet.default()


def test_import_model_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["import-model", str(DS09), "--output", str(tmp_path / "imported")]) == 0
    out = capsys.readouterr().out
    assert f"Imported {DS09 / PREFIX}: n_hidden 8, 28 symbols + blank, 16000 Hz, 32/20 ms windows" in out
    loaded = checkpoint.load_model(tmp_path / "imported")
    np.testing.assert_allclose(
        _harken_log_probs(loaded.model), np.load(DS09 / "expected.npy"), atol=1e-5, rtol=0
    )
    assert loaded.alphabet == Alphabet.default()
    argv = ["import-model", str(DS09 / PREFIX), "--output", str(tmp_path / "three")]
    assert cli.main([*argv, "--alphabet_config_path", str(DATA / "alphabet_unix.txt")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("harken: error: ")
    assert "the output layer has 29 classes" in error and "alphabet_unix.txt has 3 symbols + blank" in error


def _truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _poke(path: Path, offset: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] = value
    path.write_bytes(bytes(data))


def test_bad_checkpoints(tmp_path: Path) -> None:
    def refused(path: Path, match: str, alphabet: Path | None = None) -> None:
        with pytest.raises(InteropError, match=match):
            read_checkpoint(path, alphabet)

    refused(tmp_path / "missing", "missing: no such file or directory")
    refused(tmp_path, "not a TensorFlow checkpoint")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    refused(tmp_path / "notes.txt", "notes.txt: not a TensorFlow checkpoint")
    refused(OTHER, r"not a DeepSpeech checkpoint \(missing layer_1/weights, layer_1/bias, .*lstm_cell/kernel")
    refused(OTHER, r"it holds dense/bias, dense/kernel, global_step\)")
    refused(DS09, "29 classes, .*alphabet_unix.txt has 3 symbols", DATA / "alphabet_unix.txt")

    index = _copy(DS09, tmp_path / "index") / f"{PREFIX}.index"
    _truncate(index, 1000)
    refused(index.parent, r"\.index is truncated or not a TensorFlow checkpoint index")
    shutil.copy(DS09 / f"{PREFIX}.index", index)
    _poke(index, 40, index.read_bytes()[40] ^ 1)
    refused(index.parent, r"\.index is damaged: checksum mismatch")
    shutil.copy(DS09 / f"{PREFIX}.index", index)
    data = index.read_bytes()
    _, after_metaindex = _handle(data, len(data) - FOOTER_SIZE)
    (offset, size), _ = _handle(data, after_metaindex)
    _poke(index, offset + size, 1)  # the index block's type byte: snappy
    refused(index.parent, "blocks are snappy-compressed")

    shard = _copy(DS09, tmp_path / "data") / f"{PREFIX}.data-00000-of-00001"
    _truncate(shard, 20_000)
    refused(shard.parent, r"data-00000-of-00001 is truncated: layer_1/weights needs bytes 6640-22448")
    shutil.copy(DS09 / shard.name, shard)
    _poke(shard, 10_000, shard.read_bytes()[10_000] ^ 0x40)
    refused(shard.parent, "data-00000-of-00001 is damaged: checksum mismatch in layer_1/weights")
    shard.unlink()
    refused(shard.parent, "cannot read the checkpoint's data")


def test_layer_norm_checkpoints_are_refused() -> None:
    bundle = Checkpoint(DS09 / PREFIX)
    bundle.entries["layer_1/LayerNorm/gamma"] = TensorEntry(1, (8,), 0, 0, 32, None, False)
    with pytest.raises(InteropError, match="trained with --layer_norm"):
        _deepspeech_cell(bundle)


def test_crc32c() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    rng = np.random.default_rng(0)
    for size in (0, 1, 3, 16_383, 16_384, 16_385, 100_003, 300_001):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert crc32c(data) == _bytes_loop(0xFFFFFFFF, data) ^ 0xFFFFFFFF, size
