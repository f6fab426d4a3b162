import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from harken import checkpoint, cli, export
from harken.config import ExportConfig
from harken.train import build, save

from conftest import DATA, LDC93S1_TEXT, ldc_config


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
    # Dynamic batch and time: two sequences of 7 frames, state in and out.
    windows = np.random.default_rng(0).standard_normal((2, 7, 494)).astype(np.float32)
    zeros = np.zeros((1, 2, 32), np.float32)
    log_probs, hn, cn = session.run(None, {"windows": windows, "h0": zeros, "c0": zeros})
    assert log_probs.shape == (2, 7, 29) and hn.shape == cn.shape == (1, 2, 32)
    with torch.inference_mode():
        reference, _, _ = loaded.model(torch.from_numpy(windows))
    np.testing.assert_allclose(log_probs, reference.numpy(), atol=1e-4)


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


@pytest.mark.slow
def test_int8_export_of_a_trained_model(ldc_model: Path, tmp_path: Path) -> None:
    """int8 log-probs move with per-call activation scales: the check compares transcripts."""
    from harken.inference import Model

    loaded = checkpoint.load_model(ldc_model)
    results = export.export(
        loaded, ExportConfig(export_dir=str(tmp_path), quantize="int8"), DATA / "LDC93S1.wav"
    )
    assert results[1].path.name == "model.int8.onnx" and results[1].parity.startswith(
        "int8 check: transcript"
    )
    assert results[1].path.stat().st_size < results[0].path.stat().st_size / 2.5
    from harken import audio

    pcm = audio.to_pcm16(audio.read(DATA / "LDC93S1.wav", 16000))
    assert Model(results[0].path).stt(pcm) == LDC93S1_TEXT
    int8_text = Model(results[1].path).stt(pcm)
    from harken import metrics

    # int8 with one activation scale per call (onnxruntime's dynamic quantization) moves the transcript of
    # this 200-epoch model by 0-15 % CER depending on how its training went; the export check's own limit
    # is what it guarantees (issue 16 replaces the scheme with per-row scales and tightens both).
    assert metrics.char_errors(LDC93S1_TEXT, int8_text).rate <= 0.25, int8_text
