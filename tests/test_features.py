"""harken's MFCC against the real thing: the AudioSpectrogram+Mfcc ops inside a DeepSpeech-family .tflite."""

import math
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
    from harken.audio import Synthesizer

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


# --------------------------------------------------------------------------------------------------------
# feature_norm mean: the running mean harken's own models subtract


MEAN = FeatureConfig(feature_norm="mean")


def _speech() -> torch.Tensor:
    return torch.from_numpy(audio.read(DATA / "LDC93S1.wav", 16000))


def test_a_gain_changes_nothing_after_normalisation() -> None:
    """A gain only moves c0; the running mean takes it out (to the grid's rounding), at -30 dB too."""
    speech = _speech()
    loud = features.normalize(features.mfcc(speech, MEAN).unsqueeze(0), MEAN)
    quiet = features.normalize(features.mfcc(speech * 10 ** (-30 / 20), MEAN).unsqueeze(0), MEAN)
    raw = features.mfcc(speech, MEAN)[:, 0] - features.mfcc(speech * 10 ** (-30 / 20), MEAN)[:, 0]
    assert float(raw.abs().min()) > 30  # without it c0 moves by sqrt(80) ln(31.6) = 30.9
    assert float((loud - quiet).abs().max()) < 1e-3


def test_a_fixed_microphone_response_is_taken_out() -> None:
    """A filter is a constant per cepstral coefficient: after the first frames, nearly all of it goes."""
    speech = _speech().numpy()
    from scipy import signal

    tilted = signal.lfilter([1.0, -0.9], [1.0], speech).astype(np.float32)  # a bright microphone
    a = features.normalize(features.mfcc(torch.from_numpy(speech), MEAN).unsqueeze(0), MEAN)[0, 50:]
    b = features.normalize(features.mfcc(torch.from_numpy(tilted), MEAN).unsqueeze(0), MEAN)[0, 50:]
    raw_a = features.mfcc(torch.from_numpy(speech), MEAN)[50:]
    raw_b = features.mfcc(torch.from_numpy(tilted), MEAN)[50:]
    assert float((a - b)[:, 1:].abs().mean()) < 0.3 * float((raw_a - raw_b)[:, 1:].abs().mean())


def test_a_stream_normalises_exactly_as_the_whole_file() -> None:
    """Pieces of any size through RunningMean, the window full and not: bit-identical to normalize."""
    frames = features.mfcc(_speech(), MEAN)  # [time, n_mfcc]
    for window in (300, 40, 1):
        config = FeatureConfig(feature_norm="mean", feature_norm_window=window)
        whole = features.normalize(frames.unsqueeze(0), config)[0]
        running = features.RunningMean(config)
        rng = np.random.default_rng(window)
        pieces, start = [], 0
        while start < len(frames):
            size = int(rng.integers(0, 25))
            pieces.append(running(frames[start : start + size]))
            start += size
        assert torch.equal(torch.cat(pieces), whole), window


def test_digital_silence_is_one_constant_frame_and_counts_for_nothing() -> None:
    speech = _speech()
    step = MEAN.step_samples
    padded = torch.cat([torch.zeros(50 * step), speech])  # a second of zeros first, frame-aligned
    alone = features.normalize(features.mfcc(speech, MEAN).unsqueeze(0), MEAN)[0]
    after = features.normalize(features.mfcc(padded, MEAN).unsqueeze(0), MEAN)[0]
    silent = after[:48]
    floor = -30.0 * math.log(10.0) / 20.0 * math.sqrt(2.0 * MEAN.n_mel_channels)  # 30 dB under the mean
    assert torch.allclose(silent[:, 0], torch.tensor(floor)) and not silent[:, 1:].any()
    # no outlier beside the speech: the silent c0 is within the reach of the speech frames' own
    assert abs(floor) < 1.5 * float(alone[:, 0].abs().max())
    # the speech's frames come out nearly as without the silence before them: only the few frames that
    # overlap the zeros differ, and weigh less in the mean with every frame (counted, the 48 silent
    # frames would move every mean by tens)
    assert float((after[52:] - alone[2:]).abs().max()) < 1.5
    assert float((after[150:] - alone[100:]).abs().max()) < 0.3


def test_model_input_is_the_same_for_a_row_alone_and_in_a_padded_batch() -> None:
    speech = _speech()
    short = speech[: len(speech) // 2]
    frames = [features.mfcc(x, MEAN) for x in (speech, short)]
    batch = torch.zeros(2, len(frames[0]), MEAN.n_mfcc)
    for row, f in enumerate(frames):
        batch[row, : len(f)] = f
    lengths = torch.tensor([len(f) for f in frames])
    together = features.model_input(batch, lengths, MEAN)
    for row, f in enumerate(frames):
        alone = features.utterance_windows(speech if row == 0 else short, MEAN)[0]
        assert torch.equal(together[row, : len(f)], alone)
    assert not together[1, len(frames[1]) + MEAN.n_context :].any()  # padding past the context: zeros


def test_none_is_deepspeechs_front_end_untouched() -> None:
    none = FeatureConfig(feature_norm="none")
    frames = features.mfcc(_speech(), none).unsqueeze(0)
    assert features.normalize(frames, none) is frames
    assert torch.equal(features.RunningMean(none)(frames[0]), frames[0])


def test_stored_configs_without_the_option_meant_none() -> None:
    from harken import config as config_module
    from harken.config import Config

    old = config_module.to_dict(Config())
    del old["features"]["feature_norm"]
    assert config_module.from_dict(Config, old, stored=True).features.feature_norm == "none"
    assert config_module.from_dict(Config, old).features.feature_norm == "auto"  # a command line's default
    for window in (0, 30001):
        with pytest.raises(ValueError, match=f"--feature_norm_window {window}: must be 1 to 30000 frames"):
            FeatureConfig(feature_norm_window=window)


def test_a_model_stored_before_the_silence_option_keeps_its_silent_frame() -> None:
    """mean checkpoints written before --feature_norm_silence learned digital silence as c0 -100: loaded,
    they still get it; a new model gets the gate's floor (30 dB); the option moves it."""
    from harken import config as config_module
    from harken.config import Config

    old = config_module.to_dict(Config(features=MEAN))
    del old["features"]["feature_norm_silence"]
    stored = config_module.from_dict(Config, old, stored=True).features
    zeros = torch.zeros(1, 40, MEAN.n_mfcc)
    zeros[..., 0] = -1000.0  # far below digital silence's threshold
    for config, c0 in (
        (stored, -100.0),
        (MEAN, -30.892),
        (FeatureConfig(feature_norm="mean", feature_norm_silence=10.0), -10.297),
    ):
        silent = features.normalize(zeros, config)[0]
        assert torch.allclose(silent[:, 0], torch.tensor(c0), atol=1e-3) and not silent[:, 1:].any(), config
    with pytest.raises(ValueError, match="--feature_norm_silence 0.0: must be more than 0"):
        FeatureConfig(feature_norm_silence=0.0)


def test_noise_before_the_speech_does_not_move_the_speech() -> None:
    """A second of room tone 40 dB under the speech first: once the speech is there, the mean is over the
    loud frames, so the speech's frames come out nearly as without the noise before them."""
    from harken import conditions

    speech = _speech().numpy()
    tone = conditions.noise("room", 16000, 16000, np.random.default_rng(0)) * conditions.rms(speech) / 100
    padded = torch.from_numpy(np.concatenate([tone, speech]).astype(np.float32))
    alone = features.normalize(features.mfcc(torch.from_numpy(speech), MEAN).unsqueeze(0), MEAN)[0]
    after = features.normalize(features.mfcc(padded, MEAN).unsqueeze(0), MEAN)[0]
    shift = 16000 // MEAN.step_samples  # 50 frames
    assert float((after[shift + 20 :] - alone[20:]).abs().mean()) < 0.05
