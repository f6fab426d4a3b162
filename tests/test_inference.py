from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harken import audio, checkpoint, export, metrics
from harken.config import ExportConfig
from harken.inference import InferenceError, Model, Stream, quiet_cuts, side_by_side
from harken.train import build, save

from conftest import DATA, LDC93S1_TEXT, ldc_config

PCM = audio.to_pcm16(audio.read(DATA / "LDC93S1.wav", 16000))  # int16 [46797]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint directory, exported model.onnx) of an untrained n_hidden 32 model."""
    directory = tmp_path_factory.mktemp("tiny")
    save(build(ldc_config(directory / "ckpt", epochs=1, n_hidden=32), log=lambda _: None))
    loaded = checkpoint.load_model(directory / "ckpt")
    (result,) = export.export(loaded, ExportConfig(export_dir=str(directory / "out")), DATA / "LDC93S1.wav")
    return directory / "ckpt", result.path


def _recorded(stream: Stream) -> list[np.ndarray]:
    """The log-probs [time, n_classes] pieces the stream hands its decoder, from now on."""
    pieces: list[np.ndarray] = []
    accept = stream._accept
    stream._accept = lambda log_probs: (pieces.append(log_probs), accept(log_probs))[1]  # type: ignore[method-assign]
    return pieces


def _stream_log_probs(model: Model, chunk: int) -> np.ndarray:
    stream = model.create_stream()
    pieces = _recorded(stream)
    for start in range(0, len(PCM), chunk):
        stream.feed_audio_content(PCM[start : start + chunk])
    stream.finish_stream()
    return np.concatenate(pieces)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
@pytest.mark.parametrize("chunk", [320, 1600, 16000, 777])  # 20 ms, 100 ms, 1 s and an odd size
def test_streaming_equals_whole_file(tiny: tuple[Path, Path], backend: str, chunk: int) -> None:
    model = Model(tiny[1] if backend == "onnx" else tiny[0])
    whole = _stream_log_probs(model, len(PCM))
    assert whole.shape == (145, 29)
    np.testing.assert_allclose(_stream_log_probs(model, chunk), whole, atol=1e-5)


def test_onnx_and_torch_backends_agree_with_the_model(tiny: tuple[Path, Path]) -> None:
    loaded = checkpoint.load_model(tiny[0])
    from harken import features

    windows = features.utterance_windows(
        torch.from_numpy(PCM.astype(np.float32) / 32768), loaded.dims.features
    )
    with torch.inference_mode():
        reference = loaded.model(windows)[0][0].numpy()
    for path in tiny:
        np.testing.assert_allclose(_stream_log_probs(Model(path), len(PCM)), reference, atol=1e-4)
    assert Model(tiny[1]).sample_rate == 16000 and Model(tiny[1]).alphabet == loaded.alphabet


def _long_pcm() -> np.ndarray:
    """LDC93S1 three times with a second of silence between: 10.8 s, int16 [172391]."""
    gap = np.zeros(16000, np.int16)
    return np.concatenate([PCM, gap, PCM, gap, PCM])


def test_quiet_cuts_land_in_the_quietest_frames() -> None:
    energy = np.full(900, 5.0)
    energy[320:340] = -20.0  # quiet stretches near the even cuts at 300 and 600
    energy[605:615] = -20.0
    start, first, second, end = quiet_cuts(energy, 3)
    assert (start, end) == (0, 900) and 320 <= first < 340 and 605 <= second < 615
    energy = np.full(900, 5.0)  # nothing quiet within reach (a quarter of 300 frames): the even cuts stay
    energy[10:20] = -20.0
    assert quiet_cuts(energy, 3) == [0, 225, 525, 900]


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_side_by_side_equals_one_pass_given_all_the_past(tiny: tuple[Path, Path], backend: str) -> None:
    model = Model(tiny[1] if backend == "onnx" else tiny[0], batch_segments=1)
    from harken import features

    pcm = _long_pcm()
    samples = torch.from_numpy(pcm.astype(np.float32) / 32768)
    windows = features.utterance_windows(samples, model.dims.features)
    one_pass = model.backend(windows.numpy(), (np.zeros((1, 1, 32), np.float32),) * 2)[0][0]  # [538, 29]
    cuts = [0, 150, 300, len(one_pass)]
    together = side_by_side(model.backend, windows.numpy(), cuts, warmup=len(one_pass))
    np.testing.assert_allclose(together, one_pass, atol=1e-5)  # each stretch re-ran all that came before
    settled = side_by_side(model.backend, windows.numpy(), cuts, warmup=10)
    assert settled.shape == one_pass.shape
    np.testing.assert_allclose(settled[:150], one_pass[:150], atol=1e-5)  # the first stretch starts at 0
    assert not np.allclose(settled[150:160], one_pass[150:160], atol=1e-5)  # 10 frames of warm-up differ


class _Recording:
    """A backend that notes the shape of each batch of windows it is given."""

    def __init__(self, backend: Any, shapes: list[tuple[int, ...]]) -> None:
        self.backend, self.shapes = backend, shapes
        self.n_hidden, self.directions = backend.n_hidden, backend.directions

    def __call__(self, windows: np.ndarray, state: Any) -> Any:
        self.shapes.append(windows.shape)
        return self.backend(windows, state)


def test_long_utterances_run_as_stretches_side_by_side(tiny: tuple[Path, Path]) -> None:
    pcm, batches = _long_pcm(), []
    for segments in (1, 4):
        model = Model(tiny[1], batch_segments=segments)
        model.backend = _Recording(model.backend, batches)
        metadata = model.stt_with_metadata(pcm)
        steps = [token.timestep for token in metadata.transcripts[0].tokens]
        assert steps == sorted(steps) and (not steps or steps[-1] < 538)
    *one_pass, together = batches  # a stream's calls, then one batch: 538 frames are 2 stretches of >= 200
    assert {shape[0] for shape in one_pass} == {1} and sum(shape[1] for shape in one_pass) == 538
    assert together[0] == 2 and 269 < together[1] < 538 - 200 + 50
    with pytest.raises(InferenceError, match="batch_segments must be at least 1"):
        Model(tiny[1], batch_segments=0)


def test_input_forms_and_errors(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model = Model(tiny[1])
    text = model.stt(PCM)
    assert model.stt(PCM.tobytes()) == text and model.stt(PCM.astype(np.float32) / 32768) == text
    assert model.stt(np.zeros(100, np.int16)) == ""  # shorter than one window: nothing to say
    stream = model.create_stream()
    with pytest.raises(InferenceError, match="even number of bytes"):
        stream.feed_audio_content(b"\x00\x01\x02")
    with pytest.raises(InferenceError, match="mono"):
        stream.feed_audio_content(np.zeros((2, 100), np.int16))
    noisy = PCM.astype(np.float32) / 32768
    noisy[500] = np.nan  # a NaN would spoil an int8 stream's state for good
    with pytest.raises(InferenceError, match="not numbers"):
        stream.feed_audio_content(noisy)
    empty = np.zeros((1, 0, 494), np.float32)  # zero frames: the int8 graph's Scan cannot run them
    log_probs, state = model.backend(empty, (np.ones((1, 1, 32), np.float32),) * 2)
    assert log_probs.shape == (1, 0, 29) and state[0].sum() == 32
    stream.finish_stream()
    with pytest.raises(InferenceError, match="finished"):
        stream.feed_audio_content(PCM[:320])
    with pytest.raises(InferenceError, match="no such file"):
        Model(tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(InferenceError, match="broken.onnx: not a loadable ONNX model"):
        Model(broken)


@pytest.mark.slow
def test_trained_model_streams_its_transcript(ldc_model: Path, tmp_path: Path) -> None:
    (result,) = export.export(
        checkpoint.load_model(ldc_model), ExportConfig(export_dir=str(tmp_path)), DATA / "LDC93S1.wav"
    )
    model = Model(result.path)
    assert model.stt(PCM) == LDC93S1_TEXT
    long = model.stt(_long_pcm())  # in 2 stretches side by side (the model never heard a pause mid-speech)
    thrice = " ".join([LDC93S1_TEXT] * 3)  # a stretch lost, doubled or misplaced costs over 30 %
    assert long.startswith("she had your dark suit") and metrics.char_errors(thrice, long).rate < 0.15, long
    stream, partials = model.create_stream(), []
    for start in range(0, len(PCM), 1600):
        stream.feed_audio_content(PCM[start : start + 1600])
        partials.append(stream.intermediate_decode())
    final = stream.finish_stream_with_metadata()
    assert final.transcripts[0].text == LDC93S1_TEXT
    assert all(b.startswith(a) for a, b in zip(partials, [*partials[1:], LDC93S1_TEXT], strict=True))
    assert len(set(partials)) > 5  # the text grows as the audio comes
    tokens = final.transcripts[0].tokens
    steps = [t.timestep for t in tokens]
    assert steps == sorted(steps) and all(t.start_time == pytest.approx(t.timestep * 0.02) for t in tokens)
    assert 0.0 <= tokens[0].start_time < tokens[-1].start_time < 2.92
    assert final.transcripts[0].confidence < 0


def test_a_model_from_a_newer_harken_is_refused(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    import json

    import onnx

    proto = onnx.load(str(tiny[1]))
    for entry in proto.metadata_props:
        if entry.key == "harken":
            info = json.loads(entry.value)
            info["format_version"], info["harken_version"] = 99, "9.0"
            entry.value = json.dumps(info)
    newer = tmp_path / "newer.onnx"
    onnx.save(proto, str(newer))
    with pytest.raises(
        InferenceError, match="newer.onnx: exported by harken 9.0 in format 99; this harken reads"
    ):
        Model(newer)


def test_transcribe_bad_audio_gives_one_line_each(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes((DATA / "LDC93S1.wav").read_bytes()[:30])
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    silent = tmp_path / "silent.wav"
    audio.write(silent, np.zeros(16000, np.float32), 16000)
    bad = [empty, truncated, text, tmp_path / "missing.wav"]
    result = subprocess.run(
        [sys.executable, "-m", "harken", "transcribe", "--model", str(tiny[1]), *map(str, bad), str(silent)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr  # the README: 2 when any file failed
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("harken: error: ") for line in lines)
    assert all(str(path) in line for path, line in zip(bad, lines, strict=True))
    assert result.stdout.startswith(f"{silent}:")  # silence is an empty result, not an error
    missing_model = subprocess.run(
        [sys.executable, "-m", "harken", "transcribe", "--model", str(tmp_path / "nope.onnx"), str(silent)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (
        missing_model.returncode == 2
        and missing_model.stderr.strip()
        == f"harken: error: {tmp_path / 'nope.onnx'}: no such model file or checkpoint directory (--model)"
    )


def test_bidirectional_checkpoints_decode_when_the_stream_ends(tmp_path: Path) -> None:
    from dataclasses import replace

    config = ldc_config(tmp_path, epochs=1, n_hidden=16)
    save(build(replace(config, model=replace(config.model, bidirectional=True)), log=lambda _: None))
    model = Model(tmp_path)
    stream = model.create_stream()
    pieces = _recorded(stream)
    stream.feed_audio_content(PCM[:16000])
    assert pieces == []  # nothing decoded before the end
    stream.feed_audio_content(PCM[16000:])
    assert stream.finish_stream() == model.stt(PCM)
    assert len(pieces[0]) == 145


def test_symbols_of_several_characters_make_one_token(tmp_path: Path) -> None:
    from dataclasses import replace

    alphabet = tmp_path / "alphabet.txt"
    alphabet.write_text(" \nու\na\n", encoding="utf-8")
    config = ldc_config(tmp_path / "ckpt", epochs=1, n_hidden=16)
    config = replace(config, data=replace(config.data, alphabet_config_path=str(alphabet)))
    torch.manual_seed(3)
    save(build(config, log=lambda _: None))
    stream = Model(tmp_path / "ckpt").create_stream()
    frames = np.full((4, 4), -10.0, np.float32)  # classes: " ", "ու", "a", blank
    frames[[0, 1, 2, 3], [1, 3, 2, 1]] = 0.0  # "ու", blank, "a", "ու"
    stream._accept(frames)
    meta = stream.intermediate_decode_with_metadata().transcripts[0]
    assert [(t.text, t.timestep) for t in meta.tokens] == [("ու", 0), ("a", 2), ("ու", 3)]
    assert meta.text == "ուaու"


def test_scorer_beam_width_hot_words_and_candidates(ldc_noisy_model: Path) -> None:
    model = Model(ldc_noisy_model)
    assert model.beam_width == 16  # the default without a scorer (500 with one, below)
    model.set_beam_width(1)
    noisy = model.stt(PCM)
    assert noisy != LDC93S1_TEXT  # a few letters wrong
    model.set_beam_width(100)
    model.enable_scorer(DATA / "pruned_lm.scorer")
    assert model.stt(PCM) == LDC93S1_TEXT
    candidates = model.stt_with_metadata(PCM, num_results=3).transcripts
    assert len(candidates) == 3 and candidates[0].text == LDC93S1_TEXT
    assert len({c.text for c in candidates}) == 3
    steps = [token.timestep for token in candidates[0].tokens]
    assert steps == sorted(steps) and candidates[0].tokens[0].start_time == steps[0] * 0.02
    stream = model.create_stream()
    for start in range(0, len(PCM), 320):  # 20 ms
        stream.feed_audio_content(PCM[start : start + 320])
    assert stream.intermediate_decode().startswith("she had your dark suit")
    streamed = stream.finish_stream_with_metadata(3).transcripts
    assert [(c.text, c.tokens) for c in streamed] == [(c.text, c.tokens) for c in candidates]
    assert [c.confidence for c in streamed] == pytest.approx([c.confidence for c in candidates], abs=1e-3)
    model.add_hot_word("water", -40.0)
    assert "water" not in model.stt(PCM).split() and model.hot_words == {"water": -40.0}
    model.erase_hot_word("water")
    assert model.stt(PCM) == LDC93S1_TEXT
    model.add_hot_word("dark", -40.0)
    model.clear_hot_words()
    assert model.hot_words == {} and model.stt(PCM) == LDC93S1_TEXT
    model.set_scorer_alpha_beta(20.0, 0.0)
    assert model.stt(PCM) == ""  # every word costs more than the acoustics give
    model.disable_scorer()
    with pytest.raises(InferenceError, match="no scorer enabled"):
        model.set_scorer_alpha_beta(1.0, 1.0)
    model.add_hot_word("dark suit", 2.0)  # without a scorer too
    assert model.hot_words == {"dark suit": 2.0}
    model.set_hot_words({"greasy wash": 1.0, "water": 1.5})
    assert model.hot_words == {"greasy wash": 1.0, "water": 1.5}
    with pytest.raises(ValueError, match="hot word 'café'"):
        model.set_hot_words({"café": 1.0})
    with pytest.raises(InferenceError, match="hot word 3"):
        model.set_hot_words({3: 1.0})  # type: ignore[dict-item]
    with pytest.raises(InferenceError, match="boost 'x'"):
        model.add_hot_word("water", "x")  # type: ignore[arg-type]
    assert model.hot_words == {"greasy wash": 1.0, "water": 1.5}  # unchanged by the refusal
    model.clear_hot_words()
    with pytest.raises(InferenceError, match="not a hot word"):
        model.erase_hot_word("water")
    with pytest.raises(ValueError, match="LDC93S1.wav: not a scorer package"):
        model.enable_scorer(DATA / "LDC93S1.wav")


def _clips() -> list[np.ndarray]:
    """Five overlapping stretches of LDC93S1 of different lengths (1 s to 1.4 s)."""
    return [PCM[i * 3000 : i * 3000 + 16000 + i * 1700] for i in range(5)]


def _alone(model: Model, clip: np.ndarray, chunk: int = 320) -> tuple[np.ndarray, str]:
    stream = model.create_stream()
    pieces = _recorded(stream)
    for start in range(0, len(clip), chunk):
        stream.feed_audio_content(clip[start : start + chunk])
    text = stream.finish_stream()
    return np.concatenate(pieces), text


@pytest.mark.parametrize("kind", ["torch", "onnx", "int8"])
def test_streams_stepped_together_equal_each_alone(
    tiny: tuple[Path, Path], kind: str, tmp_path: Path
) -> None:
    """Model.step_streams runs the pending windows of many streams in one call per step (streams with as
    many new windows stacked, their LSTM states split out again): each stream's log-probs are those it
    gets alone, in float and in int8 (whose activations are quantized one row at a time)."""
    if kind == "int8":
        loaded = checkpoint.load_model(tiny[0])
        config = ExportConfig(export_dir=str(tmp_path), quantize="int8")
        path = export.export(loaded, config, DATA / "LDC93S1.wav")[-1].path
    else:
        path = tiny[1] if kind == "onnx" else tiny[0]
    model, clips = Model(path), _clips()
    alone = [_alone(model, clip) for clip in clips]
    streams = [model.create_stream() for _ in clips]
    records = [_recorded(stream) for stream in streams]
    calls = steps = 0
    for start in range(0, max(map(len, clips)), 320):
        for stream, clip in zip(streams, clips, strict=True):
            if start < len(clip):
                stream.buffer_audio(clip[start : start + 320])
        calls += model.step_streams(streams)
        steps += 1
    calls += model.step_streams(streams, final=True)
    texts = [stream.finish_stream() for stream in streams]
    for record, (log_probs, text), got in zip(records, alone, texts, strict=True):
        np.testing.assert_allclose(np.concatenate(record), log_probs, atol=1e-5)
        assert got == text
    individual = sum(len(pieces) for pieces in records)
    assert calls <= steps + 5 and calls * 3 < individual  # one call a step, not one a stream
    with pytest.raises(InferenceError, match="finished"):
        streams[0].buffer_audio(PCM[:320])


def test_step_streams_refuses_other_models_streams_and_a_bad_batch(tiny: tuple[Path, Path]) -> None:
    one, other = Model(tiny[0]), Model(tiny[1])
    with pytest.raises(InferenceError, match="streams of this model only"):
        one.step_streams([one.create_stream(), other.create_stream()])
    with pytest.raises(InferenceError, match="max_batch must be at least 1"):
        one.step_streams([one.create_stream()], max_batch=0)


def test_step_streams_honours_max_batch(tiny: tuple[Path, Path]) -> None:
    model = Model(tiny[0])
    streams = [model.create_stream() for _ in range(5)]
    for stream in streams:
        stream.buffer_audio(PCM[:16000])
    assert model.step_streams(streams, max_batch=2) == 3  # 2 + 2 + 1 streams
    assert model.step_streams(streams) == 0  # nothing new
