"""The model `make demo` trains, end to end: it hears speech at any level, and nothing in silence or noise.

These check what a model trained with harken's defaults on the synthetic corpus (recorded in varied
conditions) does on audio the corpus never had: the held-out test voices at -30 and -3 dBFS, 10 s of
silence and of generated noise, and streams that end in room tone. They need the demo's model: CI runs
`make demo` before the tests, as the README does; without it they skip, naming the command.
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


def test_quiet_and_loud_speech_are_heard_alike(model: Model, test_set: tuple[list, list]) -> None:
    waves, references = test_set
    loud = _wer(model, [conditions.at_peak(w, -3.0) for w in waves], references)
    quiet = _wer(model, [conditions.at_peak(w, -30.0) for w in waves], references)
    assert loud < 0.25, f"the demo model is not trained well enough to test: WER {loud:.1%}"
    assert abs(quiet - loud) <= 0.02, f"WER {quiet:.1%} at -30 dBFS, {loud:.1%} at -3 dBFS"


@pytest.mark.parametrize("kind", ["digital silence", *conditions.NOISES])
@pytest.mark.parametrize("peak", [-60.0, -25.0])
def test_ten_seconds_of_non_speech_are_empty(model: Model, kind: str, peak: float) -> None:
    rate = model.sample_rate
    rng = np.random.default_rng(abs(hash((kind, peak))) % 2**32)
    if kind == "digital silence":
        clip = np.zeros(10 * rate, np.float32)
    else:
        clip = conditions.at_peak(conditions.noise(kind, 10 * rate, rate, rng), peak)
    assert model.stt(audio.to_pcm16(clip)) == ""


def test_stream_finals_carry_no_phantom_words(model: Model, test_set: tuple[list, list]) -> None:
    """Each clip streamed in 20 ms pieces with a second of room tone after it (40 dB under the speech):
    the finals add no word the reference lacks, beyond what the whole file adds."""
    waves, references = test_set
    rate, step = model.sample_rate, model.sample_rate // 50
    rng = np.random.default_rng(0)
    phantom = 0
    for wave, reference in list(zip(waves, references, strict=True))[:20]:
        tail = conditions.noise("room", rate, rate, rng) * conditions.rms(wave) / 100
        pcm = audio.to_pcm16(np.concatenate([wave, tail]).astype(np.float32))
        stream = model.create_stream()
        for start in range(0, len(pcm), step):
            stream.feed_audio_content(pcm[start : start + step])
        final = stream.finish_stream()
        whole = model.stt(audio.to_pcm16(wave))
        inserted = jiwer.process_words(reference, final).insertions if final else 0
        before = jiwer.process_words(reference, whole).insertions if whole else 0
        phantom += max(0, inserted - before)
    assert phantom == 0
