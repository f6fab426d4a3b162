from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from harken import audio, features
from harken.config import FeatureConfig
from harken.inference import Model
from harken.transcribe import expand, transcribe_files

from conftest import DATA, LDC93S1_TEXT


def test_expand_files_folders_and_globs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".Trash").mkdir()
    for name in ("b.wav", "a.flac", "sub/c.mp3", "notes.txt", "._b.wav", ".Trash/d.wav"):
        (tmp_path / name).write_bytes(b"")
    assert expand([tmp_path]) == [tmp_path / "a.flac", tmp_path / "b.wav", tmp_path / "sub" / "c.mp3"]
    assert expand([str(tmp_path / "*.wav")]) == [tmp_path / "b.wav"]
    assert expand([tmp_path / "missing.wav"]) == [tmp_path / "missing.wav"]  # reported later, not dropped


def test_a_folder_gives_transcribe_every_file_the_folder_importer_takes(tmp_path: Path) -> None:
    from harken.importers import folder

    names = [f"x{suffix}" for suffix in sorted(folder.AUDIO_SUFFIXES)]  # .wave, .sph, .rf64, .voc ...
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert expand([tmp_path]) == [tmp_path / n for n in sorted(names)]


@pytest.mark.slow
def test_other_rates_and_channel_counts_transcribe_like_the_original(ldc_model: Path, tmp_path: Path) -> None:
    """The model only ever heard the 16 kHz mono file; the 44.1 kHz stereo one must give the same text."""
    loaded = Model(ldc_model)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt garbage")
    names = ["LDC93S1.wav", "LDC93S1_pcms16le_2_44100.wav"]
    results = list(transcribe_files(loaded, [*(DATA / n for n in names), corrupt]))
    assert [r.text for r in results[:2]] == [LDC93S1_TEXT] * 2
    assert results[0].duration == pytest.approx(2.92, abs=0.01)
    assert "corrupt.wav: not a readable audio file" in results[2].error


def test_8khz_audio_is_upsampled_to_what_a_16khz_model_hears_of_it() -> None:
    """8 kHz audio has nothing above 4 kHz: after conversion its features must equal those of the 16 kHz
    original with that band removed (the same original taken down to 8 kHz and back), frame for frame."""
    original = audio.read(DATA / "LDC93S1.wav", 16000)
    band_limited = audio.resample(audio.resample(original, 16000, 8000), 8000, 16000)
    converted = audio.read(DATA / "LDC93S1_pcms16le_1_8000.wav", 16000)
    n = min(len(converted), len(band_limited))
    config = FeatureConfig()
    ours = features.mfcc(torch.from_numpy(converted[:n]), config)
    reference = features.mfcc(torch.from_numpy(band_limited[:n]), config)
    # Below 4 kHz the signals agree to the 8 kHz file's 16-bit quantisation.
    assert np.corrcoef(converted[:n], band_limited[:n])[0, 1] > 0.999
    assert (ours - reference)[:, :13].abs().median() < 0.5


def test_audio_shorter_than_a_window_is_a_per_file_error(tmp_path: Path) -> None:
    from harken.train import build, save

    from conftest import ldc_config

    save(build(ldc_config(tmp_path / "ckpt", epochs=1, n_hidden=8), log=lambda _: None))
    loaded = Model(tmp_path / "ckpt")
    short = tmp_path / "short.wav"
    audio.write(short, np.full(300, 0.1, dtype=np.float32), 16000)
    results = list(transcribe_files(loaded, [short, DATA / "LDC93S1.wav"]))
    assert results[0].error == f"{short}: shorter than one 32 ms feature window"
    assert not results[1].error and results[1].duration == pytest.approx(2.92, abs=0.01)


def _two_sentences(tmp_path: Path) -> tuple[Path, np.ndarray]:
    from harken.audio import Synthesizer

    synthesizer = Synthesizer()
    pieces = []
    for text in ("turn the red lamp on", "set the timer to seven minutes"):
        pcm, rate = synthesizer.speak(text, "en-us+m3")
        pieces += [audio.resample(audio.from_pcm16(pcm), rate, 16000), np.zeros(40000, np.float32)]
    samples = np.concatenate([np.zeros(8000, np.float32), *pieces])
    path = tmp_path / "two.wav"
    audio.write(path, samples, 16000)
    return path, samples


def test_voice_activity_splits_at_pauses(tmp_path: Path) -> None:
    from harken.transcribe import speech_segments

    _, samples = _two_sentences(tmp_path)
    segments = speech_segments(samples, 16000)
    assert len(segments) == 2
    (a0, a1), (b0, b1) = segments
    assert (
        0.2 < a0 / 16000 < 0.6 and a1 < b0 and b1 <= len(samples)
    )  # the leading 0.5 s of silence is skipped
    assert speech_segments(np.zeros(32000, np.float32), 16000) == []
    assert speech_segments(samples, 16000, aggressiveness=-1) == [(0, len(samples))]
    assert speech_segments(samples[:22050], 22050) == [(0, 22050)]  # a rate WebRTC does not take
    long = speech_segments(np.tile(samples, 4), 16000, max_seconds=2.0)
    assert all((end - start) / 16000 <= 2.4 for start, end in long)
    assert all(a[1] <= b[0] for a, b in zip(long, long[1:], strict=False))  # pieces never overlap
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 7).astype(np.float32)  # "speech" throughout
    cut = speech_segments(noise, 16000, aggressiveness=0, max_seconds=2.0)
    assert len(cut) >= 3 and all(a[1] <= b[0] for a, b in zip(cut, cut[1:], strict=False))
    assert sum(end - start for start, end in cut) >= 0.9 * len(noise)  # and nothing is lost between them


@pytest.mark.slow
def test_transcribe_command_writes_subtitles(ldc_model: Path, tmp_path: Path) -> None:
    import srt

    from harken import cli

    out = str(tmp_path / "out")
    files = [str(DATA / "LDC93S1.wav"), str(DATA / "LDC93S1_pcms16le_2_44100.wav")]
    argv = [
        "transcribe",
        "--checkpoint_dir",
        str(ldc_model),
        "--output_format",
        "srt",
        "--output_dir",
        out,
        *files,
    ]
    assert cli.main(argv) == 0
    for name in ("LDC93S1.srt", "LDC93S1_pcms16le_2_44100.srt"):
        (subtitle,) = srt.parse((tmp_path / "out" / name).read_text())
        assert subtitle.content == LDC93S1_TEXT and subtitle.end.total_seconds() <= 2.93
    silent = tmp_path / "silent.wav"
    audio.write(silent, np.zeros(32000, np.float32), 16000)
    assert cli.main(["transcribe", "--checkpoint_dir", str(ldc_model), "--json", str(silent)]) == 0


def test_output_names_never_collide() -> None:
    from harken.transcribe import output_names

    paths = [Path("rec/a/x.wav"), Path("rec/b/x.wav"), Path("rec/b/y.wav"), Path("rec/b/y.mp3")]
    names = output_names(paths, "srt")
    assert list(names.values()) == [
        Path("a/x.srt"),
        Path("b/x.srt"),
        Path("b/y.wav.srt"),
        Path("b/y.mp3.srt"),
    ]
    assert output_names([Path("one.wav")], "json", Path("out")) == {Path("one.wav"): Path("out/one.json")}
    # x.wav and x.ogg take their full names; x.wav.ogg's stem is then x.wav's full name: it takes its own
    paths = [Path("a/x.wav"), Path("a/x.ogg"), Path("a/x.wav.ogg"), Path("b/x.wav")]
    assert list(output_names(paths, "txt", Path("out")).values()) == [
        Path("out/a/x.wav.txt"), Path("out/a/x.ogg.txt"), Path("out/a/x.wav.ogg.txt"), Path("out/b/x.txt"),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="a/X.wav and a/x.wav would both be written to out/X.wav.txt"):
        output_names([Path("a/X.wav"), Path("a/x.wav")], "txt", Path("out"))  # one file on macOS


def test_an_input_given_twice_is_kept_once() -> None:
    from harken.transcribe import unique

    paths = [Path("x.wav"), Path("a/../x.wav"), Path("y.wav"), Path("s3://bucket/x.wav"), Path("x.wav")]
    assert unique([*paths, Path("s3:/bucket/x.wav")]) == (
        [Path("x.wav"), Path("y.wav"), Path("s3://bucket/x.wav")],
        [Path("a/../x.wav"), Path("x.wav"), Path("s3:/bucket/x.wav")],
    )


def test_truncated_files_are_transcribed_as_far_as_they_go_with_a_warning(tmp_path: Path) -> None:
    """A WAV file cut short (libsndfile says nothing) and a long FLAC file cut short, read in blocks."""
    import json

    from harken.formats import render
    from harken.train import build, save

    from conftest import ldc_config

    save(build(ldc_config(tmp_path / "ckpt", epochs=1, n_hidden=8), log=lambda _: None))
    loaded = Model(tmp_path / "ckpt")
    wav = tmp_path / "cut.wav"
    wav.write_bytes((DATA / "LDC93S1.wav").read_bytes()[:20044])  # 10,000 of 46,797 samples
    samples = audio.read(DATA / "LDC93S1.wav", 16000)
    flac = tmp_path / "long.flac"
    audio.write(tmp_path / "long.wav", np.tile(samples, 3), 16000)
    soundfile.write(str(flac), np.tile(audio.to_pcm16(samples), 3), 16000)
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    cut, long = transcribe_files(loaded, [wav, flac], split_above=2.0)  # 8.8 s: read in blocks
    assert cut.warning == f"{wav}: truncated: the header announces 2.92 s, the file holds 0.62 s"
    assert not cut.error and cut.duration == 10000 / 16000
    assert json.loads(render(cut, "json"))["warning"] == cut.warning
    assert not long.error and long.warning.startswith(
        f"{flac}: unreadable after {long.duration:.2f} s of the"
    )
    assert 2.0 < long.duration < 6.0
    (whole,) = transcribe_files(loaded, [tmp_path / "long.wav"], split_above=2.0)
    assert not whole.warning and "warning" not in json.loads(render(whole, "json"))


def test_unmatched_inputs_are_reported(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    pattern = str(tmp_path / "*.mp3")
    assert expand([tmp_path / "empty", pattern]) == [tmp_path / "empty", Path(pattern)]


def test_blocks_join_into_the_whole_file() -> None:
    for name in ("LDC93S1.wav", "LDC93S1_pcms16le_1_8000.wav", "LDC93S1_pcms16le_2_44100.wav"):
        whole = audio.read(DATA / name, 16000)
        pieces = list(audio.blocks(DATA / name, 16000, seconds=0.4))
        assert len(pieces) >= 7 and max(len(p) for p in pieces) <= 0.41 * 16000
        np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-6)


@pytest.mark.slow
def test_a_long_recording_is_read_in_blocks_and_split_at_pauses(ldc_model: Path, tmp_path: Path) -> None:
    """Eight LDC93S1 sentences with 1.5 s pauses (35 s), read in 3 s blocks: about the same segments as
    the whole file split at once, one per sentence. (The overfitted model only knows the sentence with the
    file's own edges, so with the pauses around it the first and last words come out garbled.)"""
    from harken.transcribe import transcribe_blocks, transcribe_samples

    sentence = audio.read(DATA / "LDC93S1.wav", 16000)
    long = np.concatenate([np.concatenate([sentence, np.zeros(24000, np.float32)]) for _ in range(8)])
    path = tmp_path / "long.wav"
    audio.write(path, long, 16000)
    model = Model(ldc_model)
    segments = list(transcribe_blocks(model, audio.blocks(path, 16000, seconds=3.0), split_above=30.0))
    whole = transcribe_samples(model, audio.read(path, 16000), split_above=30.0)
    assert len(whole) == len(segments)
    for ours, theirs in zip(segments, whole, strict=True):  # edges may move by a few 30 ms detector frames
        assert abs(ours.start - theirs.start) < 0.2 and abs(ours.end - theirs.end) < 0.2
    assert len(segments) == 8 and all("your dark suit in greasy wash water" in s.text for s in segments)
    assert all(abs(s.start - n * 4.42) < 0.5 for n, s in enumerate(segments))  # 2.92 s + 1.5 s apart
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:], strict=False))
    (result,) = transcribe_files(model, [path], split_above=30.0)
    assert len(result.segments) == 8
    assert all(abs(a.start - b.start) < 0.2 for a, b in zip(result.segments, segments, strict=True))
    assert result.duration == pytest.approx(len(long) / 16000)


def test_output_folders_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    from harken.transcribe import check_output_folder

    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "b").write_text("a file where a folder of transcripts goes")
    (out / "x.txt").mkdir()
    check_output_folder(out, [out / "a" / "x.txt", out / "y.txt"])
    check_output_folder(tmp_path / "new" / "out", [tmp_path / "new" / "out" / "x.txt"])
    for targets, message in [
        ([out / "b" / "x.txt"], f"{out / 'b'}: a file, not a folder (for {out / 'b' / 'x.txt'})"),
        ([out / "x.txt"], f"{out / 'x.txt'}: a folder, where the transcript of an input is to be written"),
    ]:
        with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
            check_output_folder(out, targets)
    with pytest.raises(ValueError, match=r"b: a file, not a folder \(--output_dir .*b/deeper\)"):
        check_output_folder(out / "b" / "deeper", [])
