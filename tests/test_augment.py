"""Augmentation: DeepSpeech 0.9's --augment specs and value ranges, every technique on real audio (LDC93S1),
determinism under the seed, p=0 leaving features exactly as they were, and the listening preview."""

from __future__ import annotations

import csv
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from harken import audio, features
from harken.augment import (
    REGISTRY,
    AugmentationError,
    Augmenter,
    ValueRange,
    parse_spec,
    preview,
    sample_rng,
    training_clock,
)
from harken.augment.base import Context, TensorAugmentation
from harken.augment.waveform import Reverb, max_dbfs
from harken.config import FeatureConfig

DATA = Path(__file__).parent / "data"
CONFIG = FeatureConfig()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return audio.read(DATA / "LDC93S1.wav", CONFIG.audio_sample_rate)  # [46797], 2.9 s


@pytest.fixture(scope="module")
def plain(speech: np.ndarray) -> torch.Tensor:
    return features.mfcc(torch.from_numpy(speech), CONFIG)  # [145, 26]


@pytest.fixture(scope="module")
def noise_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A noise manifest of two short files (hum and white noise), without a transcript column."""
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(7)
    t = np.arange(8000) / 16000
    audio.write(folder / "hum.wav", (0.3 * np.sin(2 * np.pi * 120 * t)).astype(np.float32), 16000)
    audio.write(folder / "hiss.wav", (0.2 * rng.standard_normal(12000)).astype(np.float32), 16000)
    with (folder / "noise.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["wav_filename", "wav_filesize"], ["hum.wav", 0], ["hiss.wav", 0]])
    return folder / "noise.csv"


# DeepSpeech 0.9's documented example specs, with p=1 so that each fires (overlay's source is made here).
EXAMPLES = [
    "overlay[p=1,source={noise},layers=1,snr=12:3]",
    "reverb[p=1,delay=50.0~30.0,decay=10.0:2.0~1.0]",
    "resample[p=1,rate=12000:8000~4000]",
    "codec[p=1,bitrate=48000:16000]",
    "volume[p=1,dbfs=-10:-40]",
    "pitch[p=1,pitch=1~0.2]",
    "tempo[p=1,factor=1~0.5,max_time=-1]",
    "warp[p=1,nt=4,nf=1,wt=0.5:1.0,wf=0.1:0.2]",
    "frequency_mask[p=1,n=1:3,size=1:5]",
    "time_mask[p=1,domain=signal,n=3:10~2,size=50:100~40]",
    "dropout[p=1,rate=0.05]",
    "add[p=1,domain=signal,stddev=0~0.5]",
    "multiply[p=1,domain=features,stddev=0~0.5]",
]


def _spec(template: str, noise_csv: Path) -> str:
    return template.format(noise=noise_csv)


# --- value ranges -------------------------------------------------------------------------------------------


def test_value_range_syntax() -> None:
    assert ValueRange.parse("5") == ValueRange(5.0, 5.0, 0.0)
    assert ValueRange.parse("1~0.2") == ValueRange(1.0, 1.0, 0.2)
    assert ValueRange.parse("-10:-40") == ValueRange(-10.0, -40.0, 0.0)
    assert ValueRange.parse("12000:8000~4000", integer=True) == ValueRange(12000, 8000, 4000, integer=True)
    for bad, integer in [("1~2~3", False), ("1:2:3", False), ("abc", False), ("1.5", True), ("", False)]:
        with pytest.raises(ValueError):
            ValueRange.parse(bad, integer)
    for bad in ["nan", "1:inf", "1~-0.5"]:
        with pytest.raises(ValueError):
            ValueRange.parse(bad)


def test_value_range_moves_with_the_clock() -> None:
    """DeepSpeech's example: 4:6~2 picks in [2, 6] at the start of training and in [4, 8] at its end."""
    span = ValueRange.parse("4:6~2")
    assert (span.centre(0.0), span.centre(0.5), span.centre(1.0)) == (4.0, 5.0, 6.0)
    assert span.centre(-1.0) == 4.0 and span.centre(3.0) == 6.0  # the clock is clamped to [0, 1]
    rng = np.random.default_rng(0)
    start = np.array([span.pick(0.0, rng) for _ in range(4000)])
    end = np.array([span.pick(1.0, rng) for _ in range(4000)])
    assert 2.0 <= start.min() < 2.05 and 5.95 < start.max() <= 6.0
    assert 4.0 <= end.min() < 4.05 and 7.95 < end.max() <= 8.0
    assert abs(start.mean() - 4.0) < 0.1 and abs(end.mean() - 6.0) < 0.1  # uniform around the centre
    assert ValueRange.parse("-10:-40").pick(0.25, rng) == -17.5  # no radius: exactly the centre


def test_integer_ranges_round_their_picks() -> None:
    span = ValueRange.parse("3:10~2", integer=True)
    rng = np.random.default_rng(1)
    picks = {span.pick_int(0.0, rng) for _ in range(2000)}
    assert picks == {1, 2, 3, 4, 5}
    assert ValueRange.parse("2:3", integer=True).pick_int(0.5, rng) == 2  # 2.5 rounds half to even


def test_training_clock_and_sample_generators() -> None:
    assert training_clock(0, 4, 0, 100) == 0.0
    assert training_clock(1, 4, 50, 100) == pytest.approx(0.375)
    assert training_clock(3, 4, 100, 100) == 1.0
    assert training_clock(0, 0, 5, 10) == 0.0
    assert sample_rng(1, 2, 3).random() == sample_rng(1, 2, 3).random()
    assert sample_rng(1, 2, 3).random() != sample_rng(1, 2, 4).random()
    assert sample_rng(1, 2, 3).random() != sample_rng(1, 3, 3).random()


# --- spec parsing -------------------------------------------------------------------------------------------


def test_every_documented_example_parses(noise_csv: Path) -> None:
    parsed = [parse_spec(_spec(s, noise_csv)) for s in EXAMPLES]
    assert [a.NAME for a in parsed] == [s.split("[")[0] for s in EXAMPLES]
    assert set(REGISTRY) == {a.NAME for a in parsed}
    reverb = parsed[1]
    assert isinstance(reverb, Reverb) and reverb.p == 1.0 and reverb.domain == "sample"
    assert reverb.delay == ValueRange(50.0, 50.0, 30.0) and reverb.decay == ValueRange(10.0, 2.0, 1.0)
    assert (
        parsed[9].domain == "signal" and parsed[10].domain == "spectrogram"
    )  # time_mask / dropout's default
    assert parsed[12].domain == "features"


def test_bare_names_take_deepspeechs_defaults() -> None:
    volume = parse_spec("volume")
    assert volume.p == 1.0 and volume.describe() == "volume[p=1,dbfs=3.0103]"
    assert parse_spec("pitch").describe() == "pitch[p=1,pitch=1.075~0.125]"
    assert parse_spec("tempo[]").describe() == "tempo[p=1,factor=1.1,max_time=-1.0]"
    assert (
        parse_spec(" add[ p = 0.5 , stddev = 1:2 ] ").describe()
        == "add[p=0.5,domain=features,stddev=1.0:2.0]"
    )


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("echo[p=1]", "unknown augmentation 'echo'"),
        ("Volume", "expected name[key=value"),
        ("volume[p=1", "expected name[key=value"),
        ("volume[gain=3]", "volume has no parameter 'gain' (it has p, dbfs)"),
        ("volume[p=0.1,p=0.2]", "p is given twice"),
        ("volume[p]", "expected key=value, got 'p'"),
        ("volume[p=often]", "p: 'often' is not a number"),
        ("volume[p=1.5]", "not a probability"),
        ("resample[rate=8000.5]", "rate: '8000.5' is not an integer"),
        ("reverb[delay=1~2~3]", "more than one '~'"),
        ("pitch[domain=signal]", "pitch has no parameter 'domain'"),
        ("add[domain=waveform]", "domain 'waveform' is not one of features, signal, spectrogram"),
        ("overlay[p=0.1]", "overlay needs source=..."),
        ("overlay[source=/no/such/noise.csv]", "no such file"),
        ("overlay[source=noise.sdb]", ".sdb sample databases are not supported"),
    ],
)
def test_bad_specs_say_what_is_wrong_in_one_line(spec: str, says: str) -> None:
    with pytest.raises(AugmentationError) as caught:
        parse_spec(spec)
    message = str(caught.value)
    assert says in message and message.startswith(f"--augment {spec}") and "\n" not in message
    assert isinstance(caught.value, ValueError)


# --- every technique ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", EXAMPLES, ids=[s.split("[")[0] for s in EXAMPLES])
def test_each_technique_changes_the_features_and_keeps_shapes(
    template: str, noise_csv: Path, speech: np.ndarray, plain: torch.Tensor
) -> None:
    augmenter = Augmenter([_spec(template, noise_csv)], CONFIG)
    before = speech.copy()
    out = augmenter.apply(speech, 0.5, sample_rng(3, 0, 0))
    assert np.array_equal(speech, before)  # the caller's samples are untouched
    assert out.dtype == torch.float32 and out.shape[1] == CONFIG.n_mfcc and out.shape[0] >= 1
    assert torch.isfinite(out).all()
    if template.startswith("tempo"):
        assert out.shape[0] != plain.shape[0]
        return
    assert out.shape == plain.shape
    change = float((out - plain).abs().mean())
    assert change > 0.05, f"{template}: mean |change| {change:.4f}"


def test_p_zero_leaves_the_features_exactly_as_they_were(
    noise_csv: Path, speech: np.ndarray, plain: torch.Tensor
) -> None:
    specs = [_spec(s, noise_csv).replace("p=1,", "p=0,") for s in EXAMPLES]
    augmenter = Augmenter(specs, CONFIG)
    for index in range(5):
        assert torch.equal(augmenter.apply(speech, 0.5, sample_rng(3, 0, index)), plain)
    assert torch.equal(Augmenter([], CONFIG).apply(speech, 0.0, sample_rng(0, 0, 0)), plain)


def test_the_same_seed_gives_the_same_result(noise_csv: Path, speech: np.ndarray) -> None:
    specs = [_spec(s, noise_csv).replace("p=1,", "p=0.5,") for s in EXAMPLES]
    augmenter = Augmenter(specs, CONFIG)
    first = [augmenter.apply(speech, 0.3, sample_rng(11, 2, i)) for i in range(3)]
    again = [augmenter.apply(speech, 0.3, sample_rng(11, 2, i)) for i in range(3)]
    copied = pickle.loads(pickle.dumps(augmenter))  # what a data-loader worker gets
    in_worker = [copied.apply(speech, 0.3, sample_rng(11, 2, i)) for i in range(3)]
    for a, b, c in zip(first, again, in_worker, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    other = augmenter.apply(speech, 0.3, sample_rng(12, 2, 0))
    assert other.shape != first[0].shape or not torch.equal(other, first[0])


def test_each_spec_draws_from_its_own_generator(speech: np.ndarray) -> None:
    """Appending a spec (or one that does not fire) leaves what the others do unchanged."""
    alone = Augmenter(["add[p=1,stddev=1]"], CONFIG).apply(speech, 0.0, sample_rng(5, 0, 0))
    with_more = Augmenter(["add[p=1,stddev=1]", "volume[p=0]"], CONFIG).apply(
        speech, 0.0, sample_rng(5, 0, 0)
    )
    assert torch.equal(alone, with_more)


def test_signal_is_what_the_features_are_computed_from(noise_csv: Path, speech: np.ndarray) -> None:
    specs = [_spec(s, noise_csv) for s in EXAMPLES[:5]] + [
        "time_mask[domain=signal]",
        "add[domain=signal,stddev=0.01]",
    ]
    augmenter = Augmenter(specs, CONFIG)
    waveform = augmenter.signal(speech, 0.2, sample_rng(1, 0, 0))
    assert waveform.dtype == np.float32 and waveform.shape == speech.shape
    expected = features.mfcc(torch.from_numpy(waveform), CONFIG)
    assert torch.equal(augmenter.apply(speech, 0.2, sample_rng(1, 0, 0)), expected)


# --- what each technique does -------------------------------------------------------------------------------


def test_volume_levels_the_peak(speech: np.ndarray) -> None:
    for target in (-10.0, -40.0, 3.0103):
        out = Augmenter([f"volume[dbfs={target}]"], CONFIG).signal(speech, 0.0, sample_rng(0, 0, 0))
        assert max_dbfs(out) == pytest.approx(target, abs=0.01)
    assert np.abs(
        Augmenter(["volume"], CONFIG).signal(speech, 0.0, sample_rng(0, 0, 0))
    ).max() == pytest.approx(1.0, abs=1e-6)


def test_reverb_is_deepspeechs_comb_filter() -> None:
    """Five feedback combs y[i] = x[i] + g y[i - d] summed with the dry signal, levelled to the dry peak."""
    rng = np.random.default_rng(0)
    dry = np.clip(0.2 * rng.standard_normal(600), -0.9, 0.9).astype(np.float32)
    out = Reverb(delay=ValueRange.constant(1.0), decay=ValueRange.constant(6.0)).apply(dry, 0.0, rng, 16000)
    gain = 10 ** (-6.0 / 20)
    wet = dry.astype(np.float64).copy()
    for prime in (17, 19, 23, 29, 31):
        delay = max(16, math.floor(prime / 17 * 16))
        layer = dry.astype(np.float64).copy()
        for i in range(delay, len(layer)):
            layer[i] += gain * layer[i - delay]
        wet += layer
    wet *= np.abs(dry).max() / np.abs(wet).max()
    np.testing.assert_allclose(out, wet, atol=1e-6)


def test_resample_removes_what_the_lower_rate_cannot_carry(speech: np.ndarray) -> None:
    t = np.arange(16000) / 16000
    tones = (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    out = Augmenter(["resample[rate=8000]"], CONFIG).signal(tones, 0.0, sample_rng(0, 0, 0))
    spectrum = np.abs(np.fft.rfft(out[2000:14000])) / 6000
    assert out.shape == tones.shape
    assert spectrum[750] > 0.1 and spectrum[4500] < 0.003  # 1 kHz kept, 6 kHz (above 4 kHz) gone
    odd = Augmenter(["resample[rate=9999]"], CONFIG).signal(speech, 0.0, sample_rng(0, 0, 0))
    assert odd.shape == speech.shape and not np.array_equal(odd, speech)


def test_codec_is_lossy_but_keeps_the_signal(speech: np.ndarray) -> None:
    low = Augmenter(["codec[bitrate=6000]"], CONFIG).signal(speech, 0.0, sample_rng(0, 0, 0))
    high = Augmenter(["codec[bitrate=64000]"], CONFIG).signal(speech, 0.0, sample_rng(0, 0, 0))
    assert low.shape == high.shape == speech.shape
    error_low, error_high = np.abs(low - speech).mean(), np.abs(high - speech).mean()
    assert error_high < error_low and error_low > 1e-4
    assert np.corrcoef(high, speech)[0, 1] > 0.9


def test_overlay_mixes_noise_at_the_snr(noise_csv: Path, speech: np.ndarray) -> None:
    quiet = Augmenter([f"overlay[source={noise_csv},snr=30]"], CONFIG).signal(
        speech, 0.0, sample_rng(0, 0, 0)
    )
    loud = Augmenter([f"overlay[source={noise_csv},snr=0]"], CONFIG).signal(speech, 0.0, sample_rng(0, 0, 0))
    assert quiet.shape == loud.shape == speech.shape
    assert max_dbfs(quiet) == pytest.approx(max_dbfs(speech), abs=0.01)  # the sample keeps its peak level
    assert np.abs(loud - speech).mean() > 5 * np.abs(quiet - speech).mean() > 0
    silent_start = slice(0, 800)  # LDC93S1 starts quietly: the noise is what is heard there
    assert np.abs(loud[silent_start]).mean() > 3 * np.abs(speech[silent_start]).mean()
    layered = Augmenter([f"overlay[source={noise_csv},snr=0,layers=3]"], CONFIG)
    assert not np.array_equal(layered.signal(speech, 0.0, sample_rng(0, 0, 0)), loud)


def test_tempo_changes_the_frame_count_and_respects_the_transcript(
    speech: np.ndarray, plain: torch.Tensor
) -> None:
    def frames(spec: str, min_frames: int = 1) -> int:
        return Augmenter([spec], CONFIG).apply(speech, 0.0, sample_rng(0, 0, 0), min_frames).shape[0]

    assert frames("tempo[factor=2]") == plain.shape[0] // 2
    assert frames("tempo[factor=0.5]") == plain.shape[0] * 2
    assert frames("tempo[factor=2]", min_frames=100) == 100  # CTC still fits the transcript
    assert frames("tempo[factor=0.5,max_time=2000]") == 100  # 2 s at 20 ms a frame
    assert frames("tempo[factor=-3]") == plain.shape[0] * 10  # factors below 0.1 count as 0.1


def test_pitch_moves_energy_along_the_frequency_axis(speech: np.ndarray) -> None:
    power = features.spectrogram(torch.from_numpy(speech), CONFIG)  # [145, 257]
    bins = torch.arange(power.shape[1], dtype=torch.float64)

    def centroid(p: torch.Tensor) -> float:
        return float((p.double().sum(0) * bins).sum() / p.double().sum())

    up, down = parse_spec("pitch[pitch=1.3]"), parse_spec("pitch[pitch=0.7]")
    assert isinstance(up, TensorAugmentation) and isinstance(down, TensorAugmentation)
    higher = up.apply(power, 0.0, sample_rng(0, 0, 0), Context(CONFIG))  # bin k reads bin k / 1.3
    lower = down.apply(power, 0.0, sample_rng(0, 0, 0), Context(CONFIG))
    assert higher.shape == lower.shape == power.shape
    assert centroid(higher) > centroid(power) > centroid(lower)
    assert torch.equal(lower[:, 179:], torch.zeros_like(lower[:, 179:]))  # int(257 * 0.7) = 179 bins left
    assert bool((lower[:, 178] > 0).any())


def test_masks_and_dropout_zero_what_they_should(speech: np.ndarray) -> None:
    time_masked = Augmenter(["time_mask[domain=features,n=2,size=100]"], CONFIG).apply(
        speech, 0.0, sample_rng(0, 0, 0)
    )
    zero_rows = int((time_masked == 0).all(dim=1).sum())
    assert 5 <= zero_rows <= 10  # two masks of 5 frames, possibly overlapping
    dropped = Augmenter(["dropout[domain=features,rate=0.5]"], CONFIG).apply(speech, 0.0, sample_rng(0, 0, 0))
    assert 0.45 < float((dropped == 0).float().mean()) < 0.55
    masked = Augmenter(["frequency_mask[n=1,size=100]"], CONFIG).apply(speech, 0.0, sample_rng(0, 0, 0))
    assert masked.shape[0] == 145 and float(masked[:, 0].min()) < -1  # 100 of 257 bins gone: energy lost


def test_very_short_audio_keeps_valid_shapes(noise_csv: Path) -> None:
    specs = [_spec(s, noise_csv) for s in EXAMPLES] + ["time_mask[domain=features]", "dropout[domain=signal]"]
    augmenter = Augmenter(specs, CONFIG)
    one_frame = np.full(CONFIG.window_samples, 0.1, dtype=np.float32)
    for index in range(4):
        out = augmenter.apply(one_frame, 1.0, sample_rng(0, 0, index))
        assert out.shape[1] == CONFIG.n_mfcc and out.shape[0] >= 1 and torch.isfinite(out).all()
    too_short = np.full(100, 0.1, dtype=np.float32)
    assert augmenter.apply(too_short, 0.0, sample_rng(0, 0, 0)).shape == (0, CONFIG.n_mfcc)


# --- preview ------------------------------------------------------------------------------------------------


def test_preview_writes_what_training_would_hear(tmp_path: Path, noise_csv: Path, speech: np.ndarray) -> None:
    augmenter = Augmenter(
        [f"overlay[source={noise_csv},snr=10]", "reverb[p=0.5]", "frequency_mask", "multiply"], CONFIG
    )
    sources = [DATA / "LDC93S1.wav", DATA / "LDC93S1_pcms16le_1_8000.wav", DATA / "LDC93S1.wav"]
    written = preview(augmenter, sources, tmp_path / "out", 2, seed=9)
    assert [item.path.name for item in written] == ["LDC93S1.aug.wav", "LDC93S1_pcms16le_1_8000.aug.wav"]
    first = written[0]
    assert first.audible[0] == "overlay" and first.inaudible == ("frequency_mask", "multiply")
    samples, rate = soundfile.read(first.path, dtype="float32")
    assert rate == 16000 and len(samples) == len(speech)
    expected = augmenter.signal(speech, 0.0, sample_rng(9, 0, 0))
    np.testing.assert_allclose(samples, audio.to_pcm16(expected) / 32768.0, atol=1e-7)
    again = preview(augmenter, sources, tmp_path / "out", 3, seed=9)
    assert again[2].path.name == "LDC93S1-2.aug.wav"
