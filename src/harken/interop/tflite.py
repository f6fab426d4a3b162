"""DeepSpeech >= 0.7 and Coqui STT ``.tflite`` models in: weights, geometry, alphabet, feature settings.

A DeepSpeech TFLite export holds, besides its feature subgraph (AudioSpectrogram + Mfcc), the acoustic
model as FULLY_CONNECTED ops: layer_1, layer_2, layer_3 (clipped ReLU), the LSTM kernel over
concat(input, h) with TensorFlow's gate order (i, j, f, o; forget bias 0), layer_5 and layer_6, whose
softmax is the output named ``logits``. Hybrid-quantized models keep those weights in int8 with scales;
they are dequantized here. Metadata tensors carry the sample rate, the feature window and step and the
alphabet (DeepSpeech's serialised Alphabet: uint16 count, then per label uint16 id, uint16 byte length,
UTF-8 bytes). LiteRT (``ai-edge-litert``) reads the file; it is only needed to import, never to run.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harken.alphabet import Alphabet, AlphabetError
from harken.config import FeatureConfig, ModelConfig
from harken.dims import ModelDims

SUPPORTED_METADATA_VERSIONS = (1, 2, 3, 4, 5, 6)


class InteropError(ValueError):
    """A model file harken cannot import; one line saying what was expected."""


@dataclass
class ImportedModel:
    dims: ModelDims
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]

    @property
    def alphabet(self) -> Alphabet:
        return self.dims.alphabet


def parse_alphabet(blob: bytes) -> Alphabet:
    """DeepSpeech's serialised Alphabet: uint16 count, then (uint16 id, uint16 length, UTF-8 bytes) each."""
    try:
        (count,) = struct.unpack_from("<H", blob, 0)
        offset, symbols = 2, {}
        for _ in range(count):
            label, length = struct.unpack_from("<HH", blob, offset)
            offset += 4
            symbols[label] = blob[offset : offset + length].decode("utf-8")
            if len(blob[offset : offset + length]) != length:
                raise struct.error("truncated")
            offset += length
    except (struct.error, UnicodeDecodeError) as error:
        raise InteropError(f"the serialised alphabet is damaged ({error})") from None
    if sorted(symbols) != list(range(count)):
        raise InteropError("the serialised alphabet's labels are not 0..count-1")
    try:
        return Alphabet([symbols[i] for i in range(count)])
    except AlphabetError as error:
        raise InteropError(f"the serialised alphabet is not usable ({error})") from None


def _interpreter(path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise InteropError("reading .tflite models needs LiteRT: pip install 'harken[tflite]'") from None
    if not path.is_file():
        raise InteropError(f"{path}: no such file")
    try:
        interpreter = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InteropError(f"{path}: not a readable TFLite model ({reason})") from None
    return interpreter


def _dense_weights(interpreter: Any, path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight [out, in] float32, bias [out]) of each distinct FULLY_CONNECTED op, in graph order."""
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    seen: set[int] = set()
    layers = []
    for op in interpreter._get_ops_details():
        if op["op_name"] != "FULLY_CONNECTED" or op["inputs"][1] in seen:
            continue
        weight_index, bias_index = op["inputs"][1], op["inputs"][2] if len(op["inputs"]) > 2 else -1
        seen.add(weight_index)
        if bias_index < 0:
            raise InteropError(f"{path}: a dense layer has no bias; not a DeepSpeech model")
        layers.append((_dequantize(interpreter, details[weight_index]), interpreter.get_tensor(bias_index)))
    return layers


def _dequantize(interpreter: Any, detail: dict[str, Any]) -> np.ndarray:
    values = interpreter.get_tensor(detail["index"])
    if values.dtype == np.float32:
        return values
    params = detail["quantization_parameters"]
    scales = np.asarray(params["scales"], dtype=np.float64)
    zeros = np.asarray(params["zero_points"], dtype=np.float64)
    if scales.size == 0:
        raise InteropError(f"{detail['name']}: {values.dtype} weights without quantization scales")
    if scales.size == 1:
        return ((values.astype(np.float64) - zeros.reshape(())) * scales.reshape(())).astype(np.float32)
    axis = int(params.get("quantized_dimension", 0))
    shape = [1] * values.ndim
    shape[axis] = -1  # per-channel scales lie along the quantized dimension
    zeros = zeros if zeros.size == scales.size else np.zeros_like(scales)
    return ((values.astype(np.float64) - zeros.reshape(shape)) * scales.reshape(shape)).astype(np.float32)


def _metadata(interpreter: Any, path: Path) -> dict[str, Any]:
    outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    required = ("metadata_version", "metadata_sample_rate", "metadata_alphabet")
    missing = [name for name in (*required, "input_node") if name not in outputs and name not in inputs]
    if missing:
        raise InteropError(f"{path}: not a DeepSpeech/Coqui STT model (no {', '.join(missing)})")
    for detail in inputs.values():  # string tensors can only be read after one invoke()
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    interpreter.invoke()

    def read(name: str, default: Any = None) -> Any:
        return interpreter.get_tensor(outputs[name]).reshape(-1)[0] if name in outputs else default

    version = int(read("metadata_version"))
    if version not in SUPPORTED_METADATA_VERSIONS:
        raise InteropError(f"{path}: metadata version {version}, harken reads versions 1 to 6")
    language = read("metadata_language", b"")
    return {
        "version": version,
        "sample_rate": int(read("metadata_sample_rate")),
        "feature_win_len": int(read("metadata_feature_win_len", 32)),
        "feature_win_step": int(read("metadata_feature_win_step", 20)),
        "beam_width": int(read("metadata_beam_width", 500)),
        "language": language.decode("utf-8", "replace") if isinstance(language, bytes) else str(language),
        "alphabet": bytes(read("metadata_alphabet")),
        "input_shape": tuple(int(n) for n in inputs["input_node"]["shape"]),  # [1, steps, window, n_mfcc]
    }


def gates_tf_to_torch(matrix: np.ndarray) -> np.ndarray:
    """Rows in TensorFlow's LSTM gate order (i, j, f, o) -> torch's (i, f, g=j, o)."""
    i, j, f, o = np.split(matrix, 4, axis=0)
    return np.concatenate([i, f, j, o], axis=0)


def _state_dict(
    layers: list[tuple[np.ndarray, np.ndarray]], hidden: int, path: Path
) -> dict[str, torch.Tensor]:
    lstm = [n for n, (w, _) in enumerate(layers) if w.shape == (4 * hidden, 2 * hidden)]
    if len(layers) != 6 or lstm != [3]:
        shapes = ", ".join(str(tuple(w.shape)) for w, _ in layers)
        raise InteropError(f"{path}: dense layers {shapes} are not DeepSpeech's geometry")
    (w1, b1), (w2, b2), (w3, b3), (wl, bl), (w5, b5), (w6, b6) = layers

    def t(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    kernel = gates_tf_to_torch(wl)  # [4H, 2H]: columns are concat(input, h)
    return {
        "layer_1.linear.weight": t(w1), "layer_1.linear.bias": t(b1),
        "layer_2.linear.weight": t(w2), "layer_2.linear.bias": t(b2),
        "layer_3.linear.weight": t(w3), "layer_3.linear.bias": t(b3),
        "lstm.weight_ih_l0": t(kernel[:, :hidden]), "lstm.weight_hh_l0": t(kernel[:, hidden:]),
        "lstm.bias_ih_l0": t(gates_tf_to_torch(bl)), "lstm.bias_hh_l0": torch.zeros(4 * hidden),
        "layer_5.linear.weight": t(w5), "layer_5.linear.bias": t(b5),
        "layer_6.weight": t(w6), "layer_6.bias": t(b6),
    }  # fmt: skip


def read_tflite(path: str | Path) -> ImportedModel:
    """Everything harken needs from a DeepSpeech/Coqui STT ``.tflite`` file."""
    path = Path(path)
    interpreter = _interpreter(path)
    metadata = _metadata(interpreter, path)
    layers = _dense_weights(interpreter, path)
    if not layers:
        raise InteropError(f"{path}: no dense layers; not a DeepSpeech model")
    hidden = layers[0][0].shape[0]
    if len(metadata["input_shape"]) != 4:
        raise InteropError(
            f"{path}: input_node has shape {metadata['input_shape']}, expected [1, steps, window, n_mfcc]"
        )
    _, _, window, n_mfcc = metadata["input_shape"]
    features = FeatureConfig(
        audio_sample_rate=metadata["sample_rate"],
        feature_win_len=metadata["feature_win_len"],
        feature_win_step=metadata["feature_win_step"],
        n_mfcc=n_mfcc,
        n_context=(window - 1) // 2,
        feature_norm="none",  # DeepSpeech's front end
    )
    if layers[0][0].shape[1] != features.n_input:
        raise InteropError(
            f"{path}: layer_1 takes {layers[0][0].shape[1]} inputs, expected {features.n_input}"
        )
    alphabet = parse_alphabet(metadata["alphabet"])
    if layers[-1][0].shape[0] != alphabet.n_classes:
        raise InteropError(
            f"{path}: the output layer has {layers[-1][0].shape[0]} classes, "
            f"the alphabet {len(alphabet)} symbols + blank"
        )
    dims = ModelDims.of(features, ModelConfig(n_hidden=hidden), alphabet)
    return ImportedModel(dims, _state_dict(layers, hidden, path), metadata)


def run_litert(path: str | Path, windows: np.ndarray, threads: int = 1, builtin: bool = True) -> np.ndarray:
    """Run a DeepSpeech ``.tflite`` as DeepSpeech's client did, in LiteRT, for comparisons.

    windows: [1, time, n_input] context windows (harken's features) -> probabilities [time, n_classes].
    The graph takes ``steps`` frames per invoke (16 in DeepSpeech's exports) with the LSTM state carried
    over. ``builtin`` selects LiteRT's builtin kernels (DeepSpeech's client) over its XNNPACK delegate.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    options = (
        {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if builtin else {}
    )
    interpreter = Interpreter(model_path=str(path), num_threads=threads, **options)
    interpreter.allocate_tensors()
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    _, steps, width, n_mfcc = (int(n) for n in inputs["input_node"]["shape"])
    frames = windows.shape[1]
    padded = np.zeros((1, (frames + steps - 1) // steps * steps, width, n_mfcc), np.float32)
    padded[0, :frames] = windows[0].reshape(frames, width, n_mfcc)
    c = np.zeros(inputs["previous_state_c"]["shape"], np.float32)
    h = np.zeros(inputs["previous_state_h"]["shape"], np.float32)
    if "input_samples" in inputs:
        interpreter.set_tensor(
            inputs["input_samples"]["index"], np.zeros(inputs["input_samples"]["shape"], np.float32)
        )
    probabilities = []
    for start in range(0, padded.shape[1], steps):
        interpreter.set_tensor(inputs["input_node"]["index"], padded[:, start : start + steps])
        interpreter.set_tensor(inputs["previous_state_c"]["index"], c)
        interpreter.set_tensor(inputs["previous_state_h"]["index"], h)
        interpreter.invoke()
        probabilities.append(interpreter.get_tensor(outputs["logits"]).reshape(steps, -1).copy())
        c = interpreter.get_tensor(outputs["new_state_c"]).copy()
        h = interpreter.get_tensor(outputs["new_state_h"]).copy()
    return np.concatenate(probabilities)[:frames]
