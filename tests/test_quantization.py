"""The int8 graph: weights on their grid, activations quantized per row, exact integer products."""

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from harken import audio, checkpoint, features, quantization
from harken.model import DeepSpeech

from conftest import DATA


def test_weights_already_on_an_int8_grid_keep_it_exactly() -> None:
    """An imported hybrid model's weights are int8 × one scale; a slice of such a tensor (the LSTM's input
    part of TFLite's joint kernel) need not reach ±127, and keeps its grid all the same."""
    rng = np.random.default_rng(0)
    steps = rng.integers(-127, 128, (64, 48))
    steps[0, 0] = 127
    for part in (steps, steps[:, 10:] // 2):  # the whole tensor; a part whose largest step is 63
        weight = (part * 0.0123).astype(np.float32)
        got = quantization.int8_weight(weight)
        assert got.on_grid and got.values.shape == (weight.shape[1], weight.shape[0])
        np.testing.assert_array_equal(got.values.T, part)
        assert got.scale == pytest.approx(0.0123)


def test_other_weights_get_one_scale_per_output_column() -> None:
    weight = np.random.default_rng(1).standard_normal((32, 20)).astype(np.float32)
    weight[3] *= 100  # one loud output column must not coarsen the others
    got = quantization.int8_weight(weight)
    assert not got.on_grid and got.scale.shape == (32,)
    error = np.abs(got.values.T * got.scale[:, None] - weight)
    assert (error <= got.scale[:, None] / 2 + 1e-6).all()
    assert np.abs(got.values).max(axis=0).tolist() == [127] * 32


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _reference(model: DeepSpeech, windows: np.ndarray, n_mfcc: int) -> np.ndarray:
    """The scheme in numpy, one frame at a time: windows [time, n_input] -> log_probs [time, n_classes]."""

    def rows(x: np.ndarray, signed: bool, levels: int = 0) -> np.ndarray:
        levels = levels or (127 if signed else 255)
        scale = np.maximum(np.abs(x).max(-1, keepdims=True), 1e-30) / levels
        return np.round(x / scale) * scale

    def dense(x: np.ndarray, linear: torch.nn.Linear, signed: bool, clip: bool = True) -> np.ndarray:
        weight = quantization.int8_weight(linear.weight.detach().numpy())
        y = rows(x, signed) @ (weight.values * weight.scale) + linear.bias.detach().numpy()
        return np.minimum(np.maximum(y, 0), model.layer_1.clip) if clip else y

    energy = np.arange(windows.shape[1]) % n_mfcc == 0
    w1 = model.layer_1.linear.weight.detach().numpy()
    q1 = quantization.int8_weight(w1)
    x = (
        rows(np.where(energy, 0, windows), True) @ (q1.values * q1.scale)
        + windows[:, energy] @ w1[:, energy].T
    )
    x = np.minimum(np.maximum(x + model.layer_1.linear.bias.detach().numpy(), 0), model.layer_1.clip)
    x = dense(dense(x, model.layer_2.linear, False), model.layer_3.linear, False)
    p = {name: value.detach().numpy() for name, value in model.lstm.named_parameters()}
    w_ih, w_hh = (quantization.int8_weight(p[name]) for name in ("weight_ih_l0", "weight_hh_l0"))
    h = c = np.zeros(model.n_hidden, np.float32)
    outputs = []
    for frame in x:
        recurrent = rows(h, True, 63) @ (w_hh.values * w_hh.scale)  # the state: 7 bits
        gates = rows(frame, False) @ (w_ih.values * w_ih.scale) + recurrent
        i, f, g, o = np.split(gates + p["bias_ih_l0"] + p["bias_hh_l0"], 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        outputs.append(h)
    logits = dense(dense(np.stack(outputs), model.layer_5.linear, True), model.layer_6, False, clip=False)
    return torch.log_softmax(torch.from_numpy(logits), -1).numpy()


@pytest.fixture(scope="module")
def trained(ldc_model: Path) -> tuple[DeepSpeech, np.ndarray, onnxruntime.InferenceSession]:
    loaded = checkpoint.load_model(ldc_model)
    samples = torch.from_numpy(audio.read(DATA / "LDC93S1.wav", 16000))
    windows = features.utterance_windows(samples, loaded.dims.features).numpy()  # [1, time, n_input]
    proto = quantization.int8_model(loaded.model, loaded.dims.features.n_mfcc)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return loaded.model, windows, session  # onnxruntime's default options: all graph optimizations on


def _run(session: onnxruntime.InferenceSession, windows: np.ndarray, state: tuple | None = None) -> tuple:
    hidden = session.get_inputs()[1].shape[2]
    zeros = np.zeros((1, windows.shape[0], hidden), np.float32)
    h, c = state or (zeros, zeros)
    return tuple(session.run(None, {"windows": windows, "h0": h, "c0": c}))


def test_the_graph_computes_the_scheme_exactly(trained: tuple) -> None:
    """Against numpy on the same arithmetic: catches an optimizer that fuses the per-row scale away and
    integer kernels that saturate (onnxruntime's uint8 × int8 on AVX2 does, on full-range rows)."""
    model, windows, session = trained
    loud_and_silent = windows.copy()
    loud_and_silent[0, 20] *= 40  # one loud frame: with one scale per call it would flatten the others
    loud_and_silent[0, 30] = 0  # an all-zero row
    for case in (windows, loud_and_silent):
        log_probs = _run(session, case)[0][0]
        expected = _reference(model, case[0], 26)
        assert np.abs(np.exp(log_probs) - np.exp(expected)).max() < 2e-3
        assert (log_probs.argmax(-1) == expected.argmax(-1)).mean() > 0.99


def test_any_step_size_and_any_batch_give_the_same_numbers(trained: tuple) -> None:
    """One scale per row: a stream cut into 1- or 16-frame calls, the whole file in one call, and the file
    in a batch beside another one all compute the same posteriors."""
    _, windows, session = trained
    whole, hn, cn = _run(session, windows)
    for step in (1, 16):
        state, pieces = None, []
        for start in range(0, windows.shape[1], step):
            out, *new = _run(session, windows[:, start : start + step], state)
            state = (new[0], new[1])
            pieces.append(out)
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=1e-5)
        np.testing.assert_allclose(state[0], hn, atol=1e-5)
    other = np.random.default_rng(0).standard_normal(windows.shape).astype(np.float32) * 30
    batch = _run(session, np.concatenate([other, windows]))[0]
    np.testing.assert_allclose(batch[1:], whole, atol=1e-5)


def test_signed_weights_compute_the_same_integers(ldc_model: Path, trained: tuple) -> None:
    """The uint8 × uint8 products turned uint8 × int8 (the weights less 128, no zero point): on a CPU whose
    uint8 × int8 kernel is exact (VNNI) the outputs are identical, loud rows (full 8-bit range) included."""
    import onnx

    _, windows, session = trained
    loaded = checkpoint.load_model(ldc_model)
    proto = quantization.int8_model(loaded.model, loaded.dims.features.n_mfcc)
    before = sum(node.op_type == "MatMulInteger" and len(node.input) == 4 for node in proto.graph.node)
    assert quantization.with_signed_weights(proto) == before > 0
    types = {t.name: t.data_type for t in proto.graph.initializer}
    products = [node for node in proto.graph.node if node.op_type == "MatMulInteger"]
    assert all(types[node.input[1]] == onnx.TensorProto.INT8 and len(node.input) == 3 for node in products)
    if not quantization.signed_products_exact():
        pytest.skip("this CPU's uint8 x int8 kernel saturates: harken keeps the uint8 x uint8 products here")
    signed = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    loud = windows * np.linspace(0.1, 40, windows.shape[1], dtype=np.float32)[None, :, None]
    for case in (windows, loud, np.concatenate([windows, loud])):
        for got, expected in zip(_run(signed, case), _run(session, case), strict=True):
            assert np.array_equal(got, expected)


def test_bidirectional_models_are_refused() -> None:
    from conftest import ldc_config

    config = ldc_config(Path("unused"), epochs=1, n_hidden=8)
    model = DeepSpeech(config.features, type(config.model)(n_hidden=8, bidirectional=True), 29)
    with pytest.raises(ValueError, match="bidirectional"):
        quantization.int8_model(model, config.features.n_mfcc)
