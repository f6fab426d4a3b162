"""The int8 ONNX graph: int8 weights, activations quantized one row at a time, as DeepSpeech's TFLite runtime.

DeepSpeech's ``.tflite`` models run "hybrid": int8 weights, and each layer's input quantized at run time
with its own symmetric scale for every row (each frame's vector, each LSTM step's state). onnxruntime's
dynamic quantization gives a whole call's [time, features] tensor one scale instead, so a quiet frame
shares the scale of the loudest one and loses its precision, and a stream's result depends on how its
audio was cut into calls. This module writes the graph by hand, in standard ONNX operators:

- **Weights** are int8 with symmetric scales. A tensor that already lies on an int8 grid (the dequantized
  weights of an imported hybrid model) keeps exactly that grid; any other gets one scale per output column.
- **Activations** get one scale per row: max |row| / 127 for signed inputs (the MFCC windows, the LSTM
  state, the LSTM's output), max row / 255 for the clipped-ReLU outputs, which are never negative. Each
  product is an integer ``MatMulInteger`` rescaled in float. Both operands are stored as uint8 with zero
  point 128 (signed rows and the int8 weights offset by 128): onnxruntime's uint8 × int8 kernels on AVX2
  and AVX-512 without VNNI add pairs of products in int16 and saturate beyond 7-bit inputs (measured:
  wrong by up to 2e5 on full-range rows), where uint8 × uint8 is exact on every CPU.
- **The energy coefficient** (MFCC c0) of every window stays float in layer 1: digital silence makes it
  about 250 where the other coefficients stay under 15, and one scale over the row would round them away
  (the largest loss LiteRT's kernels have; 19 columns of float cost nothing).
- **The LSTM** is a ``Loop``: the input projection of all frames is one integer product, then each step
  quantizes h, multiplies it by the int8 recurrent weights and applies the gates in float.

Every frame's arithmetic depends on nothing but that frame and the state, so streaming in any step size,
whole files and side-by-side stretches give the same numbers. The graph has the float export's interface:

    windows [batch, time, n_input], h0 [1, batch, n_hidden], c0 [1, batch, n_hidden]
      -> log_probs [batch, time, n_classes], hn [1, batch, n_hidden], cn [1, batch, n_hidden]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harken.model import DeepSpeech

OPSET = 17
SCHEME = "int8 weights, per-row activations"
_GRID_TOLERANCE = 1e-3  # |w / scale - round(w / scale)| of a dequantized int8 weight is ~1e-5


@dataclass(frozen=True)
class IntWeight:
    """A weight for ``x @ values``: values int8 [in, out], scale float32 [] (whole tensor) or [out]."""

    values: np.ndarray
    scale: np.ndarray

    @property
    def on_grid(self) -> bool:
        return self.scale.ndim == 0


def _grid_scale(weight: np.ndarray) -> float | None:
    """The scale of the int8 grid ``weight`` lies on, if it does (an imported hybrid model's weights)."""
    magnitude = np.abs(weight)
    nonzero = magnitude[magnitude > 0]
    if nonzero.size == 0:
        return None
    for scale in (float(magnitude.max()) / 127, float(nonzero.min())):
        steps = weight / scale
        if np.abs(steps).max() <= 127.5 and np.abs(steps - np.round(steps)).max() < _GRID_TOLERANCE:
            return scale
    return None


def int8_weight(weight: np.ndarray) -> IntWeight:
    """weight [out, in] float -> int8 [in, out] on its own grid, else with one scale per output column."""
    weight = weight.astype(np.float64)
    grid = _grid_scale(weight)
    if grid is not None:
        scale: np.ndarray = np.asarray(grid)
        steps = np.round(weight / grid)
    else:
        columns = np.abs(weight).max(axis=1)  # [out]
        scale = np.where(columns > 0, columns / 127, 1.0)
        steps = np.round(weight / scale[:, None])
    values = np.clip(steps, -127, 127).astype(np.int8).T.copy()  # [in, out]
    return IntWeight(values, scale.astype(np.float32))


class _Graph:
    """Nodes and constants of one ONNX graph (the model, or the LSTM's loop body), named in order."""

    def __init__(self, prefix: str, constants: list[Any] | None = None) -> None:
        self.prefix, self._count = prefix, 0
        self.nodes: list[Any] = []
        self.constants: list[Any] = [] if constants is None else constants  # a loop body shares the model's

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, hint: str, value: Any, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.constants.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, *inputs: str, outputs: int = 1, **attributes: Any) -> Any:
        """Add one node; return its output name (or the names, when ``outputs`` > 1)."""
        from onnx import helper

        names = [self.name(kind.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(kind, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def quantize_rows(self, x: str, signed: bool) -> tuple[str, str]:
        """x float [..., k] -> (uint8 [..., k], peak [..., 1]): one scale per row, peak / levels, with zero
        point 128 when ``signed`` (symmetric, 127 levels a side), else 0 (rows never negative: 255)."""
        from onnx import TensorProto

        peak = self.op("ReduceMax", self.op("Abs", x) if signed else x, axes=[-1], keepdims=1)
        peak = self.op("Max", peak, self.const("tiny", 1e-30))  # an all-zero row quantizes to zeros
        scale = self.op("Div", peak, self.const("levels", _levels(signed)))
        steps = self.op("Round", self.op("Div", x, scale))
        if signed:
            steps = self.op("Add", steps, self.const("offset", 128.0))
        return self.op("Cast", steps, to=TensorProto.UINT8), peak

    def int8_matmul(self, x: str, weight: IntWeight, signed: bool, bias: np.ndarray | None) -> str:
        """x float [..., in] -> x @ weight + bias, float [..., out], with x quantized per row."""
        from onnx import TensorProto

        rows, peak = self.quantize_rows(x, signed)
        stored = (weight.values.astype(np.int16) + 128).astype(np.uint8)  # uint8 × uint8: see the docstring
        offset = self.const("zero_point", 128, np.uint8)
        operands = [rows, self.const("weight", stored, np.uint8), offset if signed else "", offset]
        product = self.op("Cast", self.op("MatMulInteger", *operands), to=TensorProto.FLOAT)
        # peak / (levels / weight scale) = row scale × weight scale [..., 1 or out]. Not a Mul of the two:
        # onnxruntime would fuse MatMulInteger -> Cast -> Mul(Mul(a, b)) into MatMulIntegerToFloat, which
        # takes a as one scale for the whole tensor (measured: 66 % frame agreement instead of 98.6 %).
        scales = self.op("Div", peak, self.const("steps", _levels(signed) / weight.scale))
        out = self.op("Mul", product, scales)
        return out if bias is None else self.op("Add", out, self.const("bias", bias))


def _levels(signed: bool) -> float:
    return 127.0 if signed else 255.0


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _clipped(graph: _Graph, x: str, clip: float) -> str:
    return graph.op("Min", graph.op("Relu", x), graph.const("clip", clip))


def _dense(graph: _Graph, x: str, linear: torch.nn.Linear, signed: bool) -> str:
    return graph.int8_matmul(x, int8_weight(_numpy(linear.weight)), signed, _numpy(linear.bias))


def _layer_1(graph: _Graph, windows: str, model: DeepSpeech, n_mfcc: int) -> str:
    """windows [batch, time, n_input] -> layer 1 before its ReLU: MFCC c0 of each window in float, the rest
    int8 with one scale per window."""
    weight, bias = _numpy(model.layer_1.linear.weight), _numpy(model.layer_1.linear.bias)  # [out, in]
    energy = np.arange(weight.shape[1]) % n_mfcc == 0  # c0 of each of the window's frames
    rest = graph.op("Mul", windows, graph.const("mask", (~energy).astype(np.float32)))
    quantized = graph.int8_matmul(rest, int8_weight(weight), True, bias)  # c0's rows meet zeros
    columns = graph.op("Gather", windows, graph.const("energy", np.flatnonzero(energy), np.int64), axis=2)
    exact = graph.op("MatMul", columns, graph.const("energy_weight", weight[:, energy].T.copy()))
    return graph.op("Add", quantized, exact)


def _gates_reordered(array: np.ndarray) -> np.ndarray:
    """torch's LSTM gate blocks (i, f, g, o) along dim 0 -> (i, f, o, g): one Sigmoid, then one Tanh."""
    i, f, g, o = np.split(array, 4)
    return np.concatenate([i, f, o, g])


def _lstm_body(graph: _Graph, gates_in: str, hidden: int, recurrent: IntWeight) -> Any:
    """The loop body: (t, condition, h [batch, hidden], c [batch, hidden]) -> (condition, h', c', h')."""
    from onnx import TensorProto, helper

    body = _Graph("step/")
    t, go, h, c = "step/t", "step/go", "step/h", "step/c"
    x_part = body.op("Gather", gates_in, t, axis=1)  # [batch, 4 * hidden]
    gates = body.op("Add", x_part, body.int8_matmul(h, recurrent, True, None))  # i, f, o, g
    sizes = body.const("sizes", [3 * hidden, hidden], np.int64)
    three, four = body.op("Split", gates, sizes, outputs=2, axis=1)  # [batch, 3 * hidden], [batch, hidden]
    i, f, o = body.op("Split", body.op("Sigmoid", three), outputs=3, axis=1)
    c_next = body.op("Add", body.op("Mul", f, c), body.op("Mul", i, body.op("Tanh", four)))
    h_next = body.op("Mul", o, body.op("Tanh", c_next))
    outputs = [go, h_next, c_next, body.op("Identity", h_next)]  # the last: the scan output, h at every step
    state: list[str | int | None] = [None, hidden]
    return helper.make_graph(
        body.nodes, "lstm_step",
        [helper.make_tensor_value_info(t, TensorProto.INT64, []),
         helper.make_tensor_value_info(go, TensorProto.BOOL, []),
         helper.make_tensor_value_info(h, TensorProto.FLOAT, state),
         helper.make_tensor_value_info(c, TensorProto.FLOAT, state)],
        [helper.make_tensor_value_info(outputs[0], TensorProto.BOOL, []),
         *(helper.make_tensor_value_info(name, TensorProto.FLOAT, state) for name in outputs[1:])],
        initializer=body.constants,
    )  # fmt: skip


def _lstm(graph: _Graph, x: str, h0: str, c0: str, lstm: torch.nn.LSTM) -> tuple[str, str, str]:
    """x [batch, time, hidden] (never negative), h0/c0 [1, batch, hidden]
    -> outputs [batch, time, hidden], hn [1, batch, hidden], cn [1, batch, hidden]."""
    hidden, weights = lstm.hidden_size, {name: _numpy(p) for name, p in lstm.named_parameters()}
    w_ih = int8_weight(_gates_reordered(weights["weight_ih_l0"]))  # [4 * hidden, hidden] before transposing
    bias = _gates_reordered(weights["bias_ih_l0"] + weights["bias_hh_l0"])
    gates_in = graph.int8_matmul(x, w_ih, False, bias)  # [batch, time, 4 * hidden]: all frames at once
    first = graph.const("axis0", [0], np.int64)
    h, c = graph.op("Squeeze", h0, first), graph.op("Squeeze", c0, first)  # [batch, hidden]
    steps = graph.op("Gather", graph.op("Shape", gates_in), graph.const("time_axis", 1, np.int64), axis=0)
    body = _lstm_body(graph, gates_in, hidden, int8_weight(_gates_reordered(weights["weight_hh_l0"])))
    hn, cn, each = graph.op("Loop", steps, "", h, c, outputs=3, body=body)  # each: [time, batch, hidden]
    outputs = graph.op("Transpose", each, perm=[1, 0, 2])
    return outputs, graph.op("Unsqueeze", hn, first), graph.op("Unsqueeze", cn, first)


def int8_model(model: DeepSpeech, n_mfcc: int) -> Any:
    """The int8 ``onnx.ModelProto`` of a unidirectional model (``n_mfcc``: coefficients per frame)."""
    from onnx import TensorProto, helper

    if model.bidirectional:
        raise ValueError("a bidirectional model cannot stream; int8 export supports unidirectional models")
    model = model.float().cpu().eval()
    graph, clip = _Graph(""), model.layer_1.clip
    with torch.no_grad():
        x = _clipped(graph, _layer_1(graph, "windows", model, n_mfcc), clip)
        x = _clipped(graph, _dense(graph, x, model.layer_2.linear, False), clip)
        x = _clipped(graph, _dense(graph, x, model.layer_3.linear, False), clip)
        x, hn, cn = _lstm(graph, x, "h0", "c0", model.lstm)
        x = _clipped(graph, _dense(graph, x, model.layer_5.linear, True), clip)
        logits = _dense(graph, x, model.layer_6, False)
    graph.nodes.append(helper.make_node("LogSoftmax", [logits], ["log_probs"], axis=-1))
    graph.nodes += [
        helper.make_node("Identity", [source], [name]) for source, name in ((hn, "hn"), (cn, "cn"))
    ]
    state: list[str | int] = [1, "batch", model.n_hidden]
    value = helper.make_tensor_value_info
    proto = helper.make_graph(
        graph.nodes, "harken_int8",
        [value("windows", TensorProto.FLOAT, ["batch", "time", model.n_input]),
         value("h0", TensorProto.FLOAT, state), value("c0", TensorProto.FLOAT, state)],
        [value("log_probs", TensorProto.FLOAT, ["batch", "time", model.n_classes]),
         value("hn", TensorProto.FLOAT, state), value("cn", TensorProto.FLOAT, state)],
        initializer=graph.constants,
    )  # fmt: skip
    result = helper.make_model(proto, opset_imports=[helper.make_opsetid("", OPSET)])
    result.ir_version = 8  # opset 17's
    return result
