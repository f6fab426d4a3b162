from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from harken.config import FeatureConfig, ModelConfig
from harken.model import DeepSpeech, choose_device, parameter_count

from conftest import one_thread

FEATURES = FeatureConfig()
N_CLASSES = 29


@pytest.fixture(autouse=True, scope="module")
def on_one_thread() -> Iterator[None]:
    """These models are tiny: one thread avoids OpenMP's overhead, which dominates on a busy machine."""
    with one_thread():
        yield


def small_model(bidirectional: bool = False, relu_clip: float = 20.0, seed: int = 0) -> DeepSpeech:
    torch.manual_seed(seed)
    config = ModelConfig(n_hidden=24, relu_clip=relu_clip, bidirectional=bidirectional)
    return DeepSpeech(FEATURES, config, N_CLASSES).eval()


def inputs(batch: int, time: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, time, FEATURES.n_input, generator=generator)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_shapes_and_log_probs(bidirectional: bool) -> None:
    model = small_model(bidirectional)
    log_probs, lengths, (h, c) = model(inputs(3, 11))
    assert log_probs.shape == (3, 11, N_CLASSES)
    assert log_probs.dtype == torch.float32
    assert lengths.tolist() == [11, 11, 11]
    directions = 2 if bidirectional else 1
    assert h.shape == c.shape == (directions, 3, 24)
    assert bool((log_probs <= 0).all())
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 11), rtol=0, atol=1e-5)
    assert model.n_classes == N_CLASSES and model.n_input == 19 * 26 == FEATURES.n_input


def expected_parameters(n_input: int, hidden: int, classes: int, bidirectional: bool = False) -> int:
    directions = 2 if bidirectional else 1
    dense = (n_input * hidden + hidden) + 2 * (hidden * hidden + hidden)
    # torch's LSTM: input and recurrent weights for 4 gates, and two bias vectors (b_ih and b_hh).
    lstm = directions * (4 * hidden * (hidden + hidden) + 2 * 4 * hidden)
    return dense + lstm + (directions * hidden * hidden + hidden) + (hidden * classes + classes)


def test_parameter_count_of_deepspeech_geometry() -> None:
    with torch.device("meta"):
        model = DeepSpeech(FEATURES, ModelConfig(), N_CLASSES)
    count = parameter_count(model)
    assert count == expected_parameters(494, 2048, 29)
    assert count == 47_233_053
    # DeepSpeech 0.9 (one LSTM bias vector) has 47,224,861: torch's second bias adds 4 * 2048.
    assert count - 4 * 2048 == 47_224_861
    small = DeepSpeech(FEATURES, ModelConfig(n_hidden=24, bidirectional=True), N_CLASSES)
    assert parameter_count(small) == expected_parameters(494, 24, 29, bidirectional=True)


def test_unidirectional_state_carries_across_chunks() -> None:
    model = small_model()
    x = inputs(2, 20)
    with torch.no_grad():
        whole, _, whole_state = model(x)
        first, _, state = model(x[:, :7])
        second, _, second_state = model(x[:, 7:], state=state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(second_state[0], whole_state[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(second_state[1], whole_state[1], rtol=0, atol=1e-5)
    # Without the state the second chunk is different: the state matters.
    fresh, _, _ = model(x[:, 7:])
    assert not torch.allclose(fresh, second, atol=1e-3)


def test_initial_state_is_zeros() -> None:
    model = small_model(bidirectional=True)
    h, c = model.initial_state(3)
    assert h.shape == c.shape == (2, 3, 24)
    assert not bool(h.any()) and not bool(c.any())
    assert h.data_ptr() != c.data_ptr()
    x = inputs(3, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], model(x, state=(h, c))[0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_changes_neither_valid_frames_nor_state(bidirectional: bool) -> None:
    model = small_model(bidirectional)
    long, short = inputs(1, 13, seed=2), inputs(1, 6, seed=3)
    padded = torch.full((2, 13, FEATURES.n_input), 7.5)  # padding of non-zero garbage
    padded[0] = long[0]
    padded[1, :6] = short[0]
    with torch.no_grad():
        out, lengths, (h, c) = model(padded, torch.tensor([13, 6]))
        alone_long, _, (h_long, c_long) = model(long)
        alone_short, _, (h_short, c_short) = model(short)
    assert lengths.tolist() == [13, 6]
    assert out.shape == (2, 13, N_CLASSES)
    torch.testing.assert_close(out[0], alone_long[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1, :6], alone_short[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(h[:, 0], h_long[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(c[:, 0], c_long[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(h[:, 1], h_short[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(c[:, 1], c_short[:, 0], rtol=0, atol=1e-5)


def test_padding_with_shorter_first_and_a_carried_state() -> None:
    """Unsorted lengths with an incoming state: each row keeps its own state."""
    model = small_model()
    a, b = inputs(1, 4, seed=4), inputs(1, 9, seed=5)
    with torch.no_grad():
        _, _, state_a = model(inputs(1, 3, seed=6))
        _, _, state_b = model(inputs(1, 5, seed=7))
        padded = torch.zeros(2, 9, FEATURES.n_input)
        padded[0, :4], padded[1] = a[0], b[0]
        state = (torch.cat([state_a[0], state_b[0]], 1), torch.cat([state_a[1], state_b[1]], 1))
        out, _, (h, _) = model(padded, torch.tensor([4, 9]), state)
        alone_a, _, (h_a, _) = model(a, state=state_a)
        alone_b, _, (h_b, _) = model(b, state=state_b)
    torch.testing.assert_close(out[0, :4], alone_a[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1], alone_b[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(h[:, 0], h_a[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(h[:, 1], h_b[:, 0], rtol=0, atol=1e-5)


def test_relu_clip_holds() -> None:
    clip = 0.5
    model = small_model(relu_clip=clip)
    outputs: dict[str, torch.Tensor] = {}
    for name in ("layer_1", "layer_2", "layer_3", "layer_5"):
        layer = getattr(model, name)
        layer.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach()))
    with torch.no_grad():
        model(inputs(2, 10) * 50.0)
    assert sorted(outputs) == ["layer_1", "layer_2", "layer_3", "layer_5"]
    for name, out in outputs.items():
        assert float(out.max()) <= clip, name
        assert float(out.min()) >= 0.0, name
    assert float(outputs["layer_1"].max()) == clip  # large inputs do reach the clip
    assert bool((outputs["layer_1"] == 0).any())  # and the ReLU zeroes negatives


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = DeepSpeech(FEATURES, ModelConfig(n_hidden=24, dropout_rate=0.5), N_CLASSES)
    x = inputs(1, 6)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], model(x)[0], rtol=0, atol=0)
        model.train()
        assert not torch.allclose(model(x)[0], model(x)[0])


def test_choose_device() -> None:
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device 'nonsense' is not a torch device"):
        choose_device("nonsense")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_choose_cuda_without_a_gpu() -> None:
    with pytest.raises(ValueError, match="--device cuda: this machine has no CUDA GPU"):
        choose_device("cuda")
    with pytest.raises(ValueError, match="--device"):
        choose_device("cuda:1")


def test_dropout_rates_follow_deepspeech_numbering() -> None:
    from harken.config import ModelConfig as Geometry

    model = DeepSpeech(FeatureConfig(), Geometry(n_hidden=8, dropout_rate=0.1, dropout_rate6=0.3), 29)
    assert isinstance(model.layer_5.dropout, torch.nn.Dropout) and model.layer_5.dropout.p == 0.3
    assert isinstance(model.layer_1.dropout, torch.nn.Dropout) and model.layer_1.dropout.p == 0.1
    assert (
        isinstance(model.layer_2.dropout, torch.nn.Dropout) and model.layer_2.dropout.p == 0.1
    )  # -1: inherit
    assert isinstance(model.lstm_dropout, torch.nn.Identity)  # dropout_rate4 defaults to 0
