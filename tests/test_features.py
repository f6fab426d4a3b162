"""harken's MFCC against the real thing: the AudioSpectrogram+Mfcc ops inside a DeepSpeech-family .tflite."""

from pathlib import Path

import numpy as np
import pytest
import torch

from harken import audio, features
from harken.config import FeatureConfig

from conftest import ARMSPEECH

DATA = Path(__file__).parent / "data"
CONFIG = FeatureConfig()


@pytest.fixture(scope="module")
def litert_mfcc():  # type: ignore[no-untyped-def]
    """MFCC frames computed by LiteRT running ArmSpeech's own feature subgraph, one 512-sample window each."""
    if not ARMSPEECH.is_file():
        pytest.fail(f"{ARMSPEECH} is missing: `make test` fetches it (ArmSpeech's sdist from PyPI)")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(ARMSPEECH),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        num_threads=2,
    )
    interpreter.allocate_tensors()
    samples_in = next(d["index"] for d in interpreter.get_input_details() if d["name"] == "input_samples")
    mfcc_out = next(d["index"] for d in interpreter.get_output_details() if d["name"] == "mfccs")

    def compute(samples: np.ndarray) -> np.ndarray:
        frames = []
        for start in range(0, len(samples) - CONFIG.window_samples + 1, CONFIG.step_samples):
            interpreter.set_tensor(samples_in, samples[start : start + CONFIG.window_samples].copy())
            interpreter.invoke()
            frames.append(interpreter.get_tensor(mfcc_out).reshape(-1).copy())
        return np.stack(frames)  # [n_frames, 26]

    return compute


def _espeak_sample() -> np.ndarray:
    from harken.importers.synthetic import Synthesizer

    pcm, rate = Synthesizer().speak("turn the kitchen light on please", "en-us+f2")
    return audio.resample(audio.from_pcm16(pcm), rate, 16000)[:16000]  # one second keeps LiteRT quick


@pytest.mark.parametrize("source", ["LDC93S1", "espeak"])
def test_mfcc_matches_tflite_ops(litert_mfcc, source: str) -> None:  # type: ignore[no-untyped-def]
    if source == "LDC93S1":
        samples = audio.read(DATA / "LDC93S1.wav", 16000)[: 16000 * 2]
    else:
        samples = audio.to_pcm16(_espeak_sample()).astype(np.float32) / 32768.0
    ours = features.mfcc(torch.from_numpy(samples), CONFIG).numpy()
    reference = litert_mfcc(samples)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-3
    assert np.abs(reference).max() > 1.0  # real, non-trivial features


def test_frame_count_uses_whole_windows_only() -> None:
    assert features.n_frames(511, CONFIG) == 0
    assert features.n_frames(512, CONFIG) == 1
    assert features.n_frames(512 + 319, CONFIG) == 1
    assert features.n_frames(512 + 320, CONFIG) == 2
    assert features.mfcc(torch.zeros(100), CONFIG).shape == (0, 26)
    lengths = torch.tensor([511, 512, 46797])
    assert features.n_frames(lengths, CONFIG).tolist() == [0, 1, 145]


def test_no_normalisation_and_silence_floor() -> None:
    silent = features.mfcc(torch.zeros(16000), CONFIG)
    # log(1e-12) in every channel, through the DCT: only c0 is non-zero.
    assert silent[0, 0].item() == pytest.approx(np.log(1e-12) * np.sqrt(2 / 40) * 40, rel=1e-5)
    assert torch.all(silent[:, 1:].abs() < 1e-3)
    loud = torch.from_numpy(audio.read(DATA / "LDC93S1.wav", 16000))
    assert not torch.allclose(features.mfcc(loud, CONFIG), features.mfcc(loud * 0.5, CONFIG))


def test_batched_equals_single() -> None:
    samples = torch.from_numpy(audio.read(DATA / "LDC93S1.wav", 16000))
    batch = torch.stack([samples[:20000], samples[10000:30000]])
    out = features.mfcc(batch, CONFIG)
    torch.testing.assert_close(out[1], features.mfcc(samples[10000:30000], CONFIG))


def test_context_windows_layout() -> None:
    frames = torch.arange(4 * 3, dtype=torch.float32).reshape(1, 4, 3)  # [batch 1, time 4, 3 coefficients]
    windows = features.context_windows(frames, n_context=1)  # [1, 4, 9]
    assert windows.shape == (1, 4, 9)
    # frame t's window: frames t-1, t, t+1, each 3 coefficients, zeros past the edges
    assert windows[0, 0].tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert windows[0, 2].tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert windows[0, 3].tolist() == [6, 7, 8, 9, 10, 11, 0, 0, 0]
    full = features.context_windows(torch.randn(2, 50, 26), CONFIG.n_context)
    assert full.shape == (2, 50, CONFIG.n_input) and CONFIG.n_input == 494
