"""Generated recording conditions: noise colours, level, telephone line, silence around speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harken import audio, conditions
from harken.conditions import Condition, Conditions

DATA = Path(__file__).parent / "data"
RATE = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return audio.read(DATA / "LDC93S1.wav", RATE)


def _band_power(samples: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    return float(power[(freqs >= low) & (freqs < high)].sum())


@pytest.mark.parametrize(("kind", "slope"), [("white", 1.0), ("pink", 10.0), ("brown", 100.0)])
def test_noise_colours(kind: str, slope: float) -> None:
    """Unit RMS; power per octave-wide band falls by the colour's slope per decade of frequency."""
    noise = conditions.noise(kind, 4 * RATE, RATE, np.random.default_rng(0))
    assert noise.dtype == np.float32 and len(noise) == 4 * RATE
    assert conditions.rms(noise) == pytest.approx(1.0, rel=1e-3)
    # the same bandwidth at 200 Hz and at 2 kHz: white equal, pink 10x, brown 100x more power low down
    ratio = _band_power(noise, 180, 220) / _band_power(noise, 1980, 2020)
    assert slope / 2.5 < ratio < slope * 2.5


def test_room_tone_is_low_and_hums() -> None:
    room = conditions.noise("room", 4 * RATE, RATE, np.random.default_rng(1))
    assert _band_power(room, 0, 1000) > 20 * _band_power(room, 1000, 8000)
    spectrum = np.abs(np.fft.rfft(room))
    freqs = np.fft.rfftfreq(len(room), 1 / RATE)
    mains = freqs[np.argmax(spectrum * (freqs > 40) * (freqs < 70))]
    assert mains == pytest.approx(50.0, abs=0.5) or mains == pytest.approx(60.0, abs=0.5)


def test_unknown_noise_is_named() -> None:
    with pytest.raises(ValueError, match="'purple'.*white, pink, brown, room"):
        conditions.noise("purple", 10, RATE, np.random.default_rng(0))


def test_at_peak(speech: np.ndarray) -> None:
    for dbfs in (-30.0, -3.0, 0.0):
        level = conditions.at_peak(speech, dbfs)
        assert 20 * np.log10(np.abs(level).max()) == pytest.approx(dbfs, abs=1e-4)
    silent = np.zeros(100, np.float32)
    assert np.array_equal(conditions.at_peak(silent, -3.0), silent)


def test_telephone_keeps_the_band_and_loses_the_rest(speech: np.ndarray) -> None:
    line = conditions.telephone(speech, RATE)
    assert line.shape == speech.shape and line.dtype == np.float32
    inside = _band_power(line, 500, 3000) / _band_power(speech, 500, 3000)
    above = _band_power(line, 4200, 8000) / _band_power(speech, 4200, 8000)
    assert 0.5 < inside < 1.5 and above < 1e-3
    # below the band only the codec's own (white) quantisation noise is left: under a fifth of what was
    # there, relative to the speech band
    below = _band_power(line, 20, 150) / _band_power(line, 500, 3000)
    assert below < 0.2 * _band_power(speech, 20, 150) / _band_power(speech, 500, 3000)


def test_apply_pads_mixes_and_levels(speech: np.ndarray) -> None:
    condition = Condition(lead=0.25, trail=0.5, noise="pink", snr=20.0, peak=-12.0)
    recorded = conditions.apply(speech, RATE, condition, np.random.default_rng(2))
    assert len(recorded) == len(speech) + round(0.75 * RATE)
    assert 20 * np.log10(np.abs(recorded).max()) == pytest.approx(-12.0, abs=1e-3)
    lead = recorded[: RATE // 4]
    # the lead is noise alone, 20 dB under the speech (both scaled by the same gain): the middle's power
    # is the speech's plus the noise's
    middle = conditions.rms(recorded[RATE // 4 : RATE // 4 + len(speech)]) ** 2
    snr = 10 * np.log10(middle / conditions.rms(lead) ** 2 - 1)
    assert snr == pytest.approx(20.0, abs=1.5)
    clean = conditions.apply(speech, RATE, Condition(lead=0.1, trail=0.1), np.random.default_rng(2))
    assert not clean[: RATE // 10].any() and not clean[-RATE // 10 :].any()  # digital silence around


def test_draw_is_a_function_of_the_generator_and_covers_the_ranges() -> None:
    spread = Conditions(as_spoken=0.0)
    first = [conditions.draw(spread, np.random.default_rng(5)) for _ in range(2)]
    assert first[0] == first[1]
    rng = np.random.default_rng(6)
    drawn = [conditions.draw(spread, rng) for _ in range(400)]
    assert all(0 <= c.lead <= spread.max_long_lead and 0 <= c.trail <= spread.max_trail for c in drawn)
    assert 0.2 < sum(c.lead > spread.max_lead for c in drawn) / 400 < 0.4
    assert all(spread.peak[0] <= c.peak <= spread.peak[1] for c in drawn)
    assert 0.2 < sum(bool(c.noise) for c in drawn) / 400 < 0.4
    assert 0.1 < sum(c.telephone for c in drawn) / 400 < 0.2
    assert {c.noise for c in drawn} == {"", *conditions.NOISES}
    assert len({c.describe() for c in drawn}) == 400


def test_a_share_is_left_as_spoken_at_any_level() -> None:
    spread = Conditions(as_spoken=0.5)
    rng = np.random.default_rng(8)
    drawn = [conditions.draw(spread, rng) for _ in range(400)]
    plain = [c for c in drawn if c == Condition(peak=c.peak)]  # no silence, noise or line
    assert 0.4 < len(plain) / 400 < 0.6
    assert all(spread.peak[0] <= c.peak <= spread.peak[1] for c in plain)
    assert len({c.peak for c in plain}) > 100  # the level is still drawn


@pytest.mark.parametrize(
    ("field", "value"),
    [("as_spoken", 1.5), ("telephone", -0.1), ("noisy", float("nan")), ("as_spoken", "0.5"),
     ("max_lead", -1.0), ("peak", (-1.0, -35.0)), ("peak", (5.0, 10.0)), ("nonspeech_seconds", (-2.0, 1.0))],
)  # fmt: skip
def test_conditions_out_of_range_are_named(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"conditions: {field} must be"):
        Conditions(**{field: value})  # type: ignore[arg-type]
