"""The model `make demo` trains, end to end: it hears speech alike at any recording level, and hears
nothing in silence and noise.

This checks what a model trained with harken's defaults for a new model (the running-mean front end, the
synthetic corpus's recording conditions) does on what its corpus never had: the held-out test voices at -30
and -3 dBFS, ten seconds of silence and of noises generated here (other seeds and levels than the corpus's),
and streams with room tone after the speech. It needs the demo's model: CI runs `make demo` before the
tests, as the README does; without it the tests skip, naming the command.
"""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pytest

from harken import audio, conditions, manifest, metrics
from harken.inference import Model

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "runs" / "demo"
CLIPS = 40  # of the test set: quick on two cores

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model() -> Model:
    if not (DEMO / "checkpoints").is_dir() or not (DEMO / "corpus" / "test.csv").is_file():
        pytest.skip("needs the demo's model: run `make demo` first")
    loaded = Model(DEMO / "checkpoints")
    loaded.set_beam_width(1)
    return loaded


@pytest.fixture(scope="module")
def test_set(model: Model) -> tuple[list[np.ndarray], list[str]]:
    samples = manifest.read_manifests(str(DEMO / "corpus" / "test.csv"))[:CLIPS]
    return [audio.read(s.path, model.sample_rate) for s in samples], [s.transcript for s in samples]


def _wer(model: Model, waves: list[np.ndarray], references: list[str]) -> float:
    return metrics.wer(references, [model.stt(audio.to_pcm16(w)) for w in waves])


def _insertions(reference: str, text: str) -> int:
    return jiwer.process_words(reference, text).insertions if text.strip() else 0


def test_quiet_and_loud_speech_are_heard_alike(model: Model, test_set: tuple[list, list]) -> None:
    waves, references = test_set
    loud = _wer(model, [conditions.at_peak(w, -3.0) for w in waves], references)
    quiet = _wer(model, [conditions.at_peak(w, -30.0) for w in waves], references)
    assert loud < 0.25, f"the demo model is not trained well enough to test: WER {loud:.1%}"
    assert abs(quiet - loud) <= 0.02, f"WER {quiet:.1%} at -30 dBFS, {loud:.1%} at -3 dBFS"


def test_silence_and_noise_are_heard_as_nothing(model: Model) -> None:
    rate = model.sample_rate
    rng = np.random.default_rng(2026)
    clips = {"digital silence": np.zeros(10 * rate, np.float32)}
    for kind in conditions.NOISES:
        for peak in (-65.0, -25.0):
            clips[f"{kind} at {peak:.0f} dBFS"] = conditions.at_peak(
                conditions.noise(kind, 10 * rate, rate, rng), peak
            )
    said = {name: model.stt(audio.to_pcm16(clip)) for name, clip in clips.items()}
    assert not any(text.strip() for text in said.values()), said


def test_stream_finals_add_no_words_after_the_speech(model: Model, test_set: tuple[list, list]) -> None:
    waves, references = test_set
    rate, step = model.sample_rate, model.sample_rate // 50  # 20 ms pieces
    rng = np.random.default_rng(17)
    phantom = []
    for wave, reference in zip(waves[:20], references[:20], strict=True):
        tone = conditions.noise("room", rate, rate, rng) * conditions.rms(wave) / 10 ** (40 / 20)
        pcm = audio.to_pcm16(np.concatenate([wave, tone]).astype(np.float32))
        stream = model.create_stream()
        for start in range(0, len(pcm), step):
            stream.feed_audio_content(pcm[start : start + step])
        final = stream.finish_stream()
        alone = model.stt(audio.to_pcm16(wave))  # the speech without the tone after it
        if _insertions(reference, final) > _insertions(reference, alone):
            phantom.append((reference, alone, final))
    assert not phantom, phantom
