"""The int8 ONNX graph: int8 weights, activations quantized one row at a time, as DeepSpeech's TFLite runtime.

DeepSpeech's ``.tflite`` models run "hybrid": int8 weights, and each layer's input quantized at run time
with its own symmetric scale for every row (each frame's vector, each LSTM step's state). onnxruntime's
dynamic quantization gives a whole call's [time, features] tensor one scale instead, so a quiet frame
shares the scale of the loudest one and loses its precision, and a stream's result depends on how its
audio was cut into calls. This module writes the graph by hand, in standard ONNX operators:

- **Weights** are int8 with symmetric scales. A tensor that already lies on an int8 grid (the dequantized
  weights of an imported hybrid model) keeps exactly that grid; any other gets one scale per output column.
- **Activations** get one scale per row: max |row| / 127 for signed inputs (the MFCC windows, the LSTM's
  output), max row / 255 for the clipped-ReLU outputs, which are never negative, and max |h| / 63 for the
  LSTM state at each step. Each product is an integer ``MatMulInteger`` rescaled in float. onnxruntime's
  uint8 × int8 kernels on AVX2 (and AVX-512 without VNNI) add pairs of products in int16 and saturate
  when a stored row value exceeds 127 (measured: wrong by up to 2e5 on full-range rows): the 8-bit rows
  multiply uint8 weights (int8 offset by 128), exact on every CPU; the state h, whose product with the
  recurrent weights is most of the model's time, keeps under 128 (7 bits) to use the uint8 × int8 kernel,
  a third faster on AVX2 and the only one VNNI speeds up, for 0.3-0.6 points of frame agreement.
- **The energy coefficient** (MFCC c0) of every window stays float in layer 1: digital silence makes it
  about 250 where the other coefficients stay under 15, and one scale over the row would round them away
  (the largest loss LiteRT's kernels have; 19 columns of float cost nothing).
- **The LSTM** is a ``Scan`` over the frames: the input projection of all frames is one integer product,
  then each step quantizes h, multiplies it by the int8 recurrent weights and applies the gates in float.

Every frame's arithmetic depends on nothing but that frame and the state, so streaming in any step size,
whole files and side-by-side stretches give the same numbers. The graph has the float export's interface:

    windows [batch, time, n_input], h0 [1, batch, n_hidden], c0 [1, batch, n_hidden]
      -> log_probs [batch, time, n_classes], hn [1, batch, n_hidden], cn [1, batch, n_hidden]
"""

from __future__ import annotations

import functools
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


@dataclass(frozen=True)
class Rows:
    """How a product's input rows are quantized: ``levels`` steps of the row's scale (a side, when signed),
    stored as uint8 offset by ``offset`` (the zero point; 0 for rows that are never negative)."""

    levels: float
    offset: int

    @property
    def wide(self) -> bool:
        """Whether a stored row can exceed 127: then only uint8 × uint8 products are exact everywhere."""
        return self.levels + self.offset > 127


UNSIGNED = Rows(255.0, 0)  # clipped-ReLU outputs: 8 bits
SIGNED = Rows(127.0, 128)  # the MFCC windows, the LSTM's output: 8 bits
NARROW = Rows(63.0, 64)  # the LSTM state h at each step: 7 bits, for the fastest exact kernel (see above)


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
    """Nodes and constants of one ONNX graph (the model, or the LSTM's step), named in order."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self._count = prefix, 0
        self.nodes: list[Any] = []
        self.constants: list[Any] = []

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

    def quantize_rows(self, x: str, rows: Rows) -> tuple[str, str]:
        """x float [..., k] -> (uint8 [..., k], peak [..., 1]): each row rounded to ``rows.levels`` steps of
        its own scale, peak / levels (a side, when signed), and offset by ``rows.offset``."""
        from onnx import TensorProto

        peak = self.op("ReduceMax", self.op("Abs", x) if rows.offset else x, axes=[-1], keepdims=1)
        peak = self.op("Max", peak, self.const("tiny", 1e-30))  # an all-zero row quantizes to zeros
        scale = self.op("Div", peak, self.const("levels", rows.levels))
        steps = self.op("Round", self.op("Div", x, scale))
        if rows.offset:
            steps = self.op("Add", steps, self.const("offset", rows.offset))
        return self.op("Cast", steps, to=TensorProto.UINT8), peak

    def int8_matmul(self, x: str, weight: IntWeight, rows: Rows, bias: np.ndarray | None) -> str:
        """x float [..., in] -> x @ weight + bias, float [..., out], with x quantized per row."""
        from onnx import TensorProto

        quantized, peak = self.quantize_rows(x, rows)
        offset = self.const("zero_point", rows.offset, np.uint8) if rows.offset else ""
        if rows.wide:  # uint8 × uint8: the weights offset by 128 too
            stored = self.const("weight", (weight.values.astype(np.int16) + 128).astype(np.uint8), np.uint8)
            operands = [quantized, stored, offset, self.const("zero_point", 128, np.uint8)]
        else:  # uint8 under 128 × int8: no pair of products overflows int16
            operands = [quantized, self.const("weight", weight.values, np.int8), offset]
        product = self.op("Cast", self.op("MatMulInteger", *operands), to=TensorProto.FLOAT)
        # peak / (levels / weight scale) = row scale × weight scale [..., 1 or out]. Not a Mul of the two:
        # onnxruntime would fuse MatMulInteger -> Cast -> Mul(Mul(a, b)) into MatMulIntegerToFloat, which
        # takes a as one scale for the whole tensor (measured: 66 % frame agreement instead of 98.6 %).
        scales = self.op("Div", peak, self.const("steps", rows.levels / weight.scale))
        out = self.op("Mul", product, scales)
        return out if bias is None else self.op("Add", out, self.const("bias", bias))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _clipped(graph: _Graph, x: str, clip: float) -> str:
    return graph.op("Min", graph.op("Relu", x), graph.const("clip", clip))


def _dense(graph: _Graph, x: str, linear: torch.nn.Linear, rows: Rows) -> str:
    return graph.int8_matmul(x, int8_weight(_numpy(linear.weight)), rows, _numpy(linear.bias))


def _layer_1(graph: _Graph, windows: str, model: DeepSpeech, n_mfcc: int) -> str:
    """windows [batch, time, n_input] -> layer 1 before its ReLU: MFCC c0 of each window in float, the rest
    int8 with one scale per window."""
    weight, bias = _numpy(model.layer_1.linear.weight), _numpy(model.layer_1.linear.bias)  # [out, in]
    energy = np.arange(weight.shape[1]) % n_mfcc == 0  # c0 of each of the window's frames
    rest = graph.op("Mul", windows, graph.const("mask", (~energy).astype(np.float32)))
    quantized = graph.int8_matmul(rest, int8_weight(weight), SIGNED, bias)  # c0's rows meet zeros
    columns = graph.op("Gather", windows, graph.const("energy", np.flatnonzero(energy), np.int64), axis=2)
    exact = graph.op("MatMul", columns, graph.const("energy_weight", weight[:, energy].T.copy()))
    return graph.op("Add", quantized, exact)


def _gates_reordered(array: np.ndarray) -> np.ndarray:
    """torch's LSTM gate blocks (i, f, g, o) along dim 0 -> (i, f, o, g): one Sigmoid, then one Tanh."""
    i, f, g, o = np.split(array, 4)
    return np.concatenate([i, f, o, g])


def _recurrent_product(body: _Graph, h: str, weight: IntWeight, zero: str) -> str:
    """h [batch, hidden] -> h @ weight [batch, 4 * hidden], h quantized per row to 7 bits (``NARROW``) by
    one QuantizeLinear along the batch (``zero``: the uint8 zero point 64 for each row, [batch])."""
    from onnx import TensorProto

    peak = body.op("ReduceMax", body.op("Abs", h), axes=[-1], keepdims=1)  # [batch, 1]
    peak = body.op("Max", peak, body.const("tiny", 1e-30))
    scale = body.op("Div", peak, body.const("levels", NARROW.levels))
    scale = body.op("Squeeze", scale, body.const("axis", [1], np.int64))  # [batch]
    rows = body.op("QuantizeLinear", h, scale, zero, axis=0)  # uint8 [batch, hidden]
    offset = body.const("zero_point", NARROW.offset, np.uint8)
    operands = [rows, body.const("weight", weight.values, np.int8), offset]
    product = body.op("Cast", body.op("MatMulInteger", *operands), to=TensorProto.FLOAT)
    return body.op("Mul", product, body.op("Div", peak, body.const("steps", NARROW.levels / weight.scale)))


def _lstm_body(hidden: int, recurrent: IntWeight, zero: str) -> Any:
    """The scan body: (h [batch, hidden], c [batch, hidden], x part [batch, 4 * hidden]) -> (h', c', h')."""
    from onnx import TensorProto, helper

    body = _Graph("step/")
    h, c, x_part = "step/h", "step/c", "step/x"
    gates = body.op("Add", x_part, _recurrent_product(body, h, recurrent, zero))  # i, f, o, g
    sizes = body.const("sizes", [3 * hidden, hidden], np.int64)
    three, four = body.op("Split", gates, sizes, outputs=2, axis=1)  # [batch, 3 * hidden], [batch, hidden]
    i, f, o = body.op("Split", body.op("Sigmoid", three), outputs=3, axis=1)
    c_next = body.op("Add", body.op("Mul", f, c), body.op("Mul", i, body.op("Tanh", four)))
    h_next = body.op("Mul", o, body.op("Tanh", c_next))
    outputs = [h_next, c_next, body.op("Identity", h_next)]  # the last: the scan output, h at every step
    value = helper.make_tensor_value_info
    return helper.make_graph(
        body.nodes, "lstm_step",
        [value(h, TensorProto.FLOAT, [None, hidden]), value(c, TensorProto.FLOAT, [None, hidden]),
         value(x_part, TensorProto.FLOAT, [None, 4 * hidden])],
        [value(name, TensorProto.FLOAT, [None, hidden]) for name in outputs],
        initializer=body.constants,
    )  # fmt: skip


def _lstm(graph: _Graph, x: str, h0: str, c0: str, lstm: torch.nn.LSTM) -> tuple[str, str, str]:
    """x [batch, time, hidden] (never negative), h0/c0 [1, batch, hidden]
    -> outputs [batch, time, hidden], hn [1, batch, hidden], cn [1, batch, hidden]."""
    hidden, weights = lstm.hidden_size, {name: _numpy(p) for name, p in lstm.named_parameters()}
    w_ih = int8_weight(_gates_reordered(weights["weight_ih_l0"]))  # [4 * hidden, hidden] before transposing
    bias = _gates_reordered(weights["bias_ih_l0"] + weights["bias_hh_l0"])
    gates_in = graph.int8_matmul(x, w_ih, UNSIGNED, bias)  # [batch, time, 4 * hidden]: all frames at once
    first = graph.const("axis0", [0], np.int64)
    h, c = graph.op("Squeeze", h0, first), graph.op("Squeeze", c0, first)  # [batch, hidden]
    batch = graph.op("Slice", graph.op("Shape", h), first, graph.const("one", [1], np.int64))  # [1]
    zero = graph.op("Expand", graph.const("narrow_zero", NARROW.offset, np.uint8), batch)  # [batch]
    body = _lstm_body(hidden, int8_weight(_gates_reordered(weights["weight_hh_l0"])), zero)
    hn, cn, outputs = graph.op("Scan", h, c, gates_in, outputs=3, body=body, num_scan_inputs=1,
                               scan_input_axes=[1], scan_output_axes=[1])  # fmt: skip
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
        x = _clipped(graph, _dense(graph, x, model.layer_2.linear, UNSIGNED), clip)
        x = _clipped(graph, _dense(graph, x, model.layer_3.linear, UNSIGNED), clip)
        x, hn, cn = _lstm(graph, x, "h0", "c0", model.lstm)
        x = _clipped(graph, _dense(graph, x, model.layer_5.linear, SIGNED), clip)
        logits = _dense(graph, x, model.layer_6, UNSIGNED)
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


@functools.lru_cache(maxsize=1)
def signed_products_exact() -> bool:
    """Whether this machine's onnxruntime multiplies full-range uint8 rows by int8 weights exactly (AVX-512
    VNNI and AVX-VNNI add each product into int32; AVX2 and plain AVX-512 add pairs in int16 and saturate).
    Found by trying: rows of 255 by weights of 127 saturate at half their value where it is inexact."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, (256, 16), dtype=np.int8)
    weights[:, 0] = 127
    node = helper.make_node("MatMulInteger", ["rows", "weights"], ["products"])
    proto = helper.make_graph(
        [node], "probe",
        [helper.make_tensor_value_info("rows", TensorProto.UINT8, ["batch", 256])],
        [helper.make_tensor_value_info("products", TensorProto.INT32, ["batch", 16])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )  # fmt: skip
    model = helper.make_model(proto, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    for batch in (1, 7, 64):  # one row, a few, many: onnxruntime picks its kernels by shape
        rows = rng.integers(0, 256, (batch, 256), dtype=np.uint8)
        rows[0] = 255
        exact = rows.astype(np.int64) @ weights.astype(np.int64)
        if not np.array_equal(session.run(None, {"rows": rows})[0], exact):
            return False
    return True


def with_signed_weights(model: Any) -> int:
    """Turn the int8 graph's uint8 × uint8 products (int8 weights stored offset by 128, exact on every
    CPU) into uint8 × int8 ones in place: the same integers, and on a CPU where
    :func:`signed_products_exact` holds, the faster kernel (2.3× measured at 64 rows on AVX-512 VNNI).
    Returns how many products were turned. Only top-level products qualify (the LSTM step's already is)."""
    from onnx import TensorProto, numpy_helper

    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    turned = 0
    for node in model.graph.node:
        if node.op_type != "MatMulInteger" or len(node.input) != 4:
            continue
        weight, zero = constants.get(node.input[1]), constants.get(node.input[3])
        if weight is None or zero is None or weight.data_type != TensorProto.UINT8:
            continue
        if numpy_helper.to_array(zero).shape != () or int(numpy_helper.to_array(zero)) != 128:
            continue
        signed = (numpy_helper.to_array(weight).astype(np.int16) - 128).astype(np.int8)
        weight.CopyFrom(numpy_helper.from_array(signed, weight.name))
        del node.input[3]  # no zero point: the weights are signed
        turned += 1
    used = _inputs(model.graph)
    unused = [tensor for tensor in model.graph.initializer if tensor.name not in used]
    for tensor in unused:  # zero points no product reads any more (the LSTM body has its own)
        model.graph.initializer.remove(tensor)
    return turned


def _inputs(graph: Any) -> set[str]:
    """Every name the graph's nodes read, in its subgraphs (the LSTM's Scan body) too."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                names |= _inputs(attribute.g)
    return names
