import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from harken import audio, checkpoint, cli, export, quantization
from harken.config import ExportConfig, to_dict
from harken.inference import METADATA_KEY, Model
from harken.train import build, save

from conftest import DATA, LDC93S1_TEXT, as_format_1, ldc_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) n_hidden 32 checkpoint: parity does not need a good model."""
    directory = tmp_path_factory.mktemp("tiny")
    save(build(ldc_config(directory, epochs=1, n_hidden=32, dropout=0.2), log=lambda _: None))
    return directory


def test_float_export_with_metadata(tiny: Path, tmp_path: Path) -> None:
    loaded = checkpoint.load_model(tiny)
    options = ExportConfig(export_dir=str(tmp_path), export_author_id="me", export_language="en")
    results = export.export(loaded, options, DATA / "LDC93S1.wav")
    assert [r.path.name for r in results] == ["model.onnx"]
    assert results[0].parity.startswith("float parity: max |Δ log-prob|")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary files left
    info = export.read_metadata(results[0].path)
    assert info["alphabet"] == list(loaded.alphabet.symbols) and info["author_id"] == "me"
    assert info["config"]["model"]["n_hidden"] == 32 and info["language"] == "en"
    session = onnxruntime.InferenceSession(str(results[0].path))
    meta = json.loads(session.get_modelmeta().custom_metadata_map["harken"])
    assert meta["config"]["features"]["audio_sample_rate"] == 16000
    assert Model(results[0].path).dims == loaded.dims  # read back from the metadata
    # Dynamic batch and time: two sequences of 7 frames, state in and out.
    windows = np.random.default_rng(0).standard_normal((2, 7, 494)).astype(np.float32)
    zeros = np.zeros((1, 2, 32), np.float32)
    log_probs, hn, cn = session.run(None, {"windows": windows, "h0": zeros, "c0": zeros})
    assert log_probs.shape == (2, 7, 29) and hn.shape == cn.shape == (1, 2, 32)
    with torch.inference_mode():
        reference, _, _ = loaded.model(torch.from_numpy(windows))
    np.testing.assert_allclose(log_probs, reference.numpy(), atol=1e-4)


def test_metadata_keeps_its_layout_whatever_the_checkpoint_format(tiny: Path, tmp_path: Path) -> None:
    """The exported config is the front end and the whole ModelConfig (dropout rates of the run included),
    as it was when a checkpoint held one config; a format-1 checkpoint exports the same metadata."""
    (path,) = checkpoint.listing(tiny, checkpoint.TRAIN)
    config = checkpoint.stored_run(checkpoint.read(path))
    assert config is not None and config.model.dropout_rate == 0.2
    options = ExportConfig(export_dir=str(tmp_path))
    info = json.loads(export.metadata(checkpoint.load_model(tiny), options)[METADATA_KEY])
    assert info["config"] == {"features": to_dict(config.features), "model": to_dict(config.model)}
    old = tmp_path / "old"
    old.mkdir()
    torch.save(as_format_1(checkpoint.read(path)), old / path.name)
    loaded_old = checkpoint.load_model(old)
    loaded_old.path = path
    assert export.metadata(loaded_old, options) == export.metadata(checkpoint.load_model(tiny), options)


def test_a_wrong_export_is_caught_and_not_kept(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = checkpoint.load_model(tiny)
    other = checkpoint.load_model(tiny)
    with torch.no_grad():
        other.model.layer_6.weight *= 1.5  # a model that is not the one being exported
    real = export._export_float
    monkeypatch.setattr(export, "_export_float", lambda _loaded, path, options: real(other, path, options))
    with pytest.raises(export.ExportError, match="log-probs differ from torch's"):
        export.export(loaded, ExportConfig(export_dir=str(tmp_path)), DATA / "LDC93S1.wav")
    assert list(tmp_path.iterdir()) == []


def test_bidirectional_models_cannot_stream(tmp_path: Path) -> None:
    config = ldc_config(tmp_path / "bi", epochs=1, n_hidden=8)
    config = type(config)(
        config.features,
        type(config.model)(n_hidden=8, bidirectional=True),
        config.data,
        config.checkpoint,
        config.train,
    )
    save(build(config, log=lambda _: None))
    with pytest.raises(export.ExportError, match="bidirectional"):
        export.export(checkpoint.load_model(tmp_path / "bi"), ExportConfig(export_dir=str(tmp_path / "out")))


def test_export_command(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--checkpoint_dir", str(tiny), "--export_dir", str(tmp_path)]
    assert cli.main(argv) == 0  # checks on espeak-ng speech by default
    out = capsys.readouterr().out
    assert "model.onnx" in out and "float parity" in out
    assert cli.main(["export", "--checkpoint_dir", str(tiny)]) == 2
    assert "no --export_dir given" in capsys.readouterr().err


def test_int8_export_keeps_the_trained_model(ldc_model: Path, tmp_path: Path) -> None:
    """Per-row activation scales: the int8 file agrees with the float model on every confident frame."""
    loaded = checkpoint.load_model(ldc_model)
    options = ExportConfig(export_dir=str(tmp_path), quantize="int8")
    results = export.export(loaded, options, DATA / "LDC93S1.wav")
    assert [r.path.name for r in results] == ["model.onnx", "model.int8.onnx"]
    assert results[1].parity.startswith("int8 check: argmax agreement 100.0% and mean |Δp| 0.00")
    assert results[1].path.stat().st_size < results[0].path.stat().st_size / 3
    assert export.read_metadata(results[1].path)["quantization"] == quantization.SCHEME
    assert export.read_metadata(results[0].path)["quantization"] == "none"
    pcm = audio.to_pcm16(audio.read(DATA / "LDC93S1.wav", 16000))
    assert Model(results[1].path).stt(pcm) == Model(results[0].path).stt(pcm) == LDC93S1_TEXT
    # The default check audio (espeak-ng English, which this model never heard) passes too.
    assert export.export(loaded, options)[1].parity.startswith("int8 check: ")


def _broken(kind: str) -> Callable[[np.ndarray], quantization.IntWeight]:
    real, calls = quantization.int8_weight, [0]

    def weight(array: np.ndarray) -> quantization.IntWeight:
        good = real(array)
        calls[0] += 1
        if kind == "scale":
            return quantization.IntWeight(good.values, good.scale * 2)  # a scale off by a factor of two
        if kind == "column":  # the output layer (the 7th weight) loses the letter b, which LDC93S1 lacks
            if calls[0] % 7:  # every export asks for 7 weights
                return good
            values = good.values.copy()
            values[:, 1] = 0
            return quantization.IntWeight(values, good.scale)
        values = good.values.reshape(-1).copy()
        np.random.default_rng(0).shuffle(values)  # the right numbers in the wrong places
        return quantization.IntWeight(values.reshape(good.values.shape), good.scale)

    return weight


@pytest.mark.parametrize("kind", ["scale", "scrambled", "column"])
def test_a_broken_int8_model_is_refused_and_not_kept(
    ldc_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    options = ExportConfig(export_dir=str(tmp_path), quantize="int8")
    loaded = checkpoint.load_model(ldc_model)
    export.export(loaded, options, DATA / "LDC93S1.wav")  # a good pair first
    monkeypatch.setattr(quantization, "int8_weight", _broken(kind))
    with pytest.raises(export.ExportError) as refused:
        export.export(loaded, options, DATA / "LDC93S1.wav")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "model.int8.onnx: ")), message
    figures = (r"picks the float model's class on \d+\.\d% of its|are \d\.\d+ \(mean \|Δp\||"
               r"log-probability of 'b' by \d+\.\d+ on the median frame")  # fmt: skip
    assert re.search(figures, message), message
    assert message.endswith("(the earlier model.int8.onnx there is removed)")  # not beside the new float file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    # A benchmark may ask for the figure without the refusal.
    results = export.export(loaded, options, DATA / "LDC93S1.wav", enforce_int8=False)
    assert results[1].parity.startswith("int8 check FAILED, not enforced (")


def test_check_audio_that_cannot_serve_is_one_line(tiny: Path, tmp_path: Path) -> None:
    loaded, out = checkpoint.load_model(tiny), tmp_path / "out"
    short = tmp_path / "short.wav"
    audio.write(short, np.zeros(100, np.float32), 16000)
    for path, expected in ((tmp_path, "a folder, not an audio file"), (short, "shorter than one 32 ms")):
        with pytest.raises(export.ExportError, match=expected):
            export.export(loaded, ExportConfig(export_dir=str(out)), path)
    assert not out.exists()  # nothing made before the audio is known to be usable


def test_an_int8_file_from_the_previous_export_still_runs(ldc_model: Path, tmp_path: Path) -> None:
    """harken export used onnxruntime's quantize_dynamic before: such files load, with a warning."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    (float_file,) = export.export(checkpoint.load_model(ldc_model), ExportConfig(export_dir=str(tmp_path)))
    old = tmp_path / "old.int8.onnx"
    quantize_dynamic(str(float_file.path), str(old), weight_type=QuantType.QInt8)
    proto = onnx.load(str(old))
    for entry in proto.metadata_props:  # as written then: no "quantization" field
        if entry.key != export.METADATA_KEY:
            continue
        info = json.loads(entry.value)
        del info["quantization"]
        entry.value = json.dumps(info)
    onnx.save(proto, str(old))
    with pytest.warns(UserWarning, match="int8 from onnxruntime's dynamic quantization.* export it again"):
        model = Model(old)
    pcm = audio.to_pcm16(audio.read(DATA / "LDC93S1.wav", 16000))
    assert model.stt(pcm).strip()  # it runs (how well depends on the CPU: see the warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Model(float_file.path)  # a current file: no warning


def test_export_command_int8(ldc_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--checkpoint_dir", str(ldc_model), "--export_dir", str(tmp_path), "--quantize", "int8"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "model.int8.onnx" in out and "int8 check: argmax agreement" in out
