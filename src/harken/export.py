"""A trained model -> ONNX: one graph for whole files and streams, float or int8, checked before success.

The graph takes context windows and the LSTM state and returns log-probabilities and the new state:

    windows [batch, time, n_input], h0 [1, batch, n_hidden], c0 [1, batch, n_hidden]
      -> log_probs [batch, time, n_classes], hn [1, batch, n_hidden], cn [1, batch, n_hidden]

so a file is one call with zero state, and a stream is many calls that pass the state on (exactly the same
numbers in float). The model's configuration, alphabet and the author fields travel in the file's
metadata. Export uses torch's TorchScript-based exporter (``dynamo=False``, opset 17): the dynamo exporter
of torch 2.13 fixes the frame count after the LSTM and keeps the LSTM out of int8 quantization.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harken import __version__, audio, decoder, features, metrics
from harken import config as config_module
from harken.checkpoint import LoadedModel
from harken.config import ExportConfig
from harken.model import DeepSpeech

INPUTS = ("windows", "h0", "c0")
OUTPUTS = ("log_probs", "hn", "cn")
METADATA_KEY = "harken"
FORMAT_VERSION = 1  # of the exported graph's interface; a reader refuses files newer than it knows


class ExportError(RuntimeError):
    """An export that failed or did not match the model it came from."""


class _Graph(nn.Module):
    """The acoustic model with its LSTM state as explicit inputs and outputs."""

    def __init__(self, model: DeepSpeech) -> None:
        super().__init__()
        self.model = model

    def forward(self, windows: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        log_probs, _, (hn, cn) = self.model(windows, None, (h0, c0))
        return log_probs, hn, cn


@dataclass
class ExportResult:
    path: Path
    parity: str  # one line: what the check compared and found


def metadata(loaded: LoadedModel, options: ExportConfig) -> dict[str, str]:
    """What an exported file says about itself (ONNX metadata_props; values are strings)."""
    geometry = config_module.to_dict(loaded.config)
    info = {
        "format_version": FORMAT_VERSION,
        "config": {"features": geometry["features"], "model": geometry["model"]},  # no local paths or data
        "alphabet": loaded.alphabet.serialize(),
        "harken_version": __version__,
        "source": loaded.path.name,
        "author_id": options.export_author_id,
        "model_name": options.export_model_name,
        "model_version": options.export_model_version,
        "contact_info": options.export_contact_info,
        "license": options.export_license,
        "language": options.export_language,
        "description": options.export_description,
    }
    return {METADATA_KEY: json.dumps(info, ensure_ascii=False)}


def _export_float(loaded: LoadedModel, path: Path, options: ExportConfig) -> None:
    import onnx

    model = loaded.model.float().cpu().eval()
    if model.bidirectional:
        raise ExportError("a bidirectional model cannot stream; export supports unidirectional models only")
    hidden, n_input = model.n_hidden, model.n_input
    example = (torch.zeros(1, 16, n_input), torch.zeros(1, 1, hidden), torch.zeros(1, 1, hidden))
    dynamic = {"windows": {0: "batch", 1: "time"}, "h0": {1: "batch"}, "c0": {1: "batch"},
               "log_probs": {0: "batch", 1: "time"}, "hn": {1: "batch"}, "cn": {1: "batch"}}  # fmt: skip
    graph = _Graph(model).eval()  # the exporter restores the wrapper's mode afterwards: keep it eval
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about the LSTM's batch size: h0/c0 are inputs here
        torch.onnx.export(
            graph, example, str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
            dynamic_axes=dynamic, opset_version=17, dynamo=False, do_constant_folding=True,
        )  # fmt: skip
    proto = onnx.load(str(path))
    for key, value in metadata(loaded, options).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "harken", __version__
    onnx.save(proto, str(path))


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # onnxruntime logs advice about pre-processing on the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.disable(previous)


def check_audio(sample_rate: int, path: Path | None = None) -> np.ndarray:
    """Real speech for the parity check: the given file, else a sentence spoken by espeak-ng."""
    if path is not None:
        return audio.read(path, sample_rate)
    from harken.importers.synthetic import Synthesizer

    pcm, rate = Synthesizer().speak("please turn the kitchen light on and set the timer to five", "en-us+m3")
    return audio.resample(audio.from_pcm16(pcm), rate, sample_rate)


def parity(
    loaded: LoadedModel, path: Path, samples: np.ndarray, quantized: bool, enforce: bool = True
) -> str:
    """Compare the ONNX file with the torch model on ``samples``; raise ExportError when they differ.

    Float: max |Δ log-prob| must be under 1e-3. int8 computes activation scales per call, so its
    log-probs move: there the greedy transcripts must be within 25 % CER of the float model's when the
    float transcript has at least 10 characters (a broken quantization is near 100 %; in-language speech
    via --check_audio gives the meaningful figure).
    """
    import onnxruntime

    cfg = loaded.config.features
    windows = features.utterance_windows(torch.from_numpy(samples), cfg)  # [1, time, n_input]
    with torch.inference_mode():
        reference, _, _ = loaded.model.float().cpu().eval()(windows)  # [1, time, n_classes]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    zeros = np.zeros((1, 1, loaded.model.n_hidden), np.float32)
    ours = session.run(["log_probs"], {"windows": windows.numpy(), "h0": zeros, "c0": zeros})[0]
    frames = reference.shape[1]
    expected = decoder.greedy(reference[0], frames, loaded.alphabet).text
    got = decoder.greedy(torch.from_numpy(ours[0]), frames, loaded.alphabet).text
    if not quantized:
        delta = float(np.abs(ours - reference.numpy()).max())
        if not np.isfinite(delta) or delta > 1e-3:
            raise ExportError(f"{path}: ONNX log-probs differ from torch's by {delta:.2e} (limit 1e-3)")
        same = "identical" if expected == got else "different"
        return f"float parity: max |Δ log-prob| {delta:.1e} over {frames} frames; transcripts {same}"
    if not np.isfinite(ours).all():
        raise ExportError(f"{path}: the int8 model gives non-finite log-probs")
    agree = float((ours[0].argmax(-1) == reference[0].numpy().argmax(-1)).mean())
    reference_text = " ".join(expected.split())
    rate = metrics.char_errors(reference_text, " ".join(got.split())).rate
    if enforce and len(reference_text) >= 10 and rate > 0.25:
        raise ExportError(f"{path}: int8 transcript is {rate:.0%} CER from the float model's (limit 25 %)")
    check = "int8 check" if enforce else "int8 check (not enforced)"
    return f"{check}: transcript {rate:.1%} CER from the float model's, frame argmax agreement {agree:.1%}"


def export(
    loaded: LoadedModel, options: ExportConfig, check_path: Path | None = None, enforce_int8: bool = True
) -> list[ExportResult]:
    """Write model.onnx (and model.int8.onnx with --quantize int8) into export_dir, each checked.
    ``enforce_int8=False`` (benchmarks, which measure accuracy themselves) reports the int8 check's figure
    without refusing the file."""
    directory = Path(options.export_dir)
    directory.mkdir(parents=True, exist_ok=True)
    samples = check_audio(loaded.config.features.audio_sample_rate, check_path)
    float_path = directory / "model.onnx"
    temporary = directory / ".model.onnx.tmp"
    try:
        _export_float(loaded, temporary, options)
        message = parity(loaded, temporary, samples, quantized=False)
        temporary.replace(float_path)
    finally:
        temporary.unlink(missing_ok=True)
    results = [ExportResult(float_path, message)]
    if options.quantize == "int8":
        int8_path = directory / "model.int8.onnx"
        temporary = directory / ".model.int8.onnx.tmp"
        try:
            _quantize(float_path, temporary)
            message = parity(loaded, temporary, samples, quantized=True, enforce=enforce_int8)
            temporary.replace(int8_path)
        finally:
            temporary.unlink(missing_ok=True)
        results.append(ExportResult(int8_path, message))
    return results


def read_metadata(path: Path) -> dict[str, Any]:
    """The harken metadata of an exported file (config, alphabet, author fields)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            info: dict[str, Any] = json.loads(entry.value)
            return info
    raise ExportError(f"{path}: an ONNX file without harken metadata (not exported by harken export)")
