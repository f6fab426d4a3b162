"""A real Coqui STT model (ArmSpeech, hybrid int8 .tflite) imported and compared with LiteRT running it."""

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from harken import audio, features
from harken.interop.tflite import InteropError, parse_alphabet, read_tflite, run_litert
from harken.model import DeepSpeech

from conftest import ARMSPEECH, DATA


def _blob(symbols: list[str]) -> bytes:
    out = struct.pack("<H", len(symbols))
    for label, symbol in enumerate(symbols):
        data = symbol.encode("utf-8")
        out += struct.pack("<HH", label, len(data)) + data
    return out


def test_parse_serialised_alphabet() -> None:
    alphabet = parse_alphabet(_blob([" ", "ա", "բ", "'"]))
    assert alphabet.symbols == (" ", "ա", "բ", "'")
    with pytest.raises(InteropError, match="damaged"):
        parse_alphabet(_blob([" ", "ա"])[:-1])
    with pytest.raises(InteropError, match="damaged"):
        parse_alphabet(b"\x01")


@pytest.fixture(scope="module")
def imported():  # type: ignore[no-untyped-def]
    if not ARMSPEECH.is_file():
        pytest.fail(f"{ARMSPEECH} is missing: `make test` fetches it (ArmSpeech's sdist from PyPI)")
    return read_tflite(ARMSPEECH)


def test_geometry_alphabet_and_features_come_from_the_model(imported) -> None:  # type: ignore[no-untyped-def]
    assert imported.dims.n_hidden == 2048
    assert imported.dims.features.audio_sample_rate == 16000 and imported.dims.features.n_context == 9
    assert imported.dims.features.feature_norm == "none"  # DeepSpeech's front end
    assert len(imported.alphabet) == 40 and imported.alphabet.symbols[:3] == (" ", "ա", "բ")
    assert imported.metadata["version"] == 6 and imported.metadata["beam_width"] == 500
    model = DeepSpeech(imported.dims.features, imported.dims.model_config(), imported.alphabet.n_classes)
    model.load_state_dict(imported.state_dict)  # every tensor present, every shape right


def _litert_probabilities(windows: torch.Tensor, delegate: bool) -> np.ndarray:
    return run_litert(ARMSPEECH, windows.numpy(), threads=2, builtin=not delegate)


def test_imported_model_agrees_with_litert(imported) -> None:  # type: ignore[no-untyped-def]
    """Against LiteRT's builtin kernels (DeepSpeech's client): about as close as its XNNPACK kernels are."""
    from harken.audio import Synthesizer

    model = DeepSpeech(imported.dims.features, imported.dims.model_config(), imported.alphabet.n_classes)
    model.load_state_dict(imported.state_dict)
    model.eval()
    synthesizer = Synthesizer()
    ours, builtin, xnnpack = [], [], []
    for text in ("բարև ձեզ ինչպես եք", "ես սիրում եմ իմ քաղաքը"):
        pcm, rate = synthesizer.speak(text, "hy")
        samples = audio.from_pcm16(audio.to_pcm16(audio.resample(audio.from_pcm16(pcm), rate, 16000)))
        windows = features.utterance_windows(torch.from_numpy(samples), imported.dims.features)  # [1, T, 494]
        with torch.inference_mode():
            ours.append(model(windows)[0][0].exp().numpy())
        builtin.append(_litert_probabilities(windows, delegate=False))
        xnnpack.append(_litert_probabilities(windows, delegate=True))
    p_ours, p_ref, p_xnn = (np.concatenate(x) for x in (ours, builtin, xnnpack))
    ours_agree = (p_ours.argmax(1) == p_ref.argmax(1)).mean()
    xnn_agree = (p_xnn.argmax(1) == p_ref.argmax(1)).mean()
    ours_delta, xnn_delta = np.abs(p_ours - p_ref).mean(), np.abs(p_xnn - p_ref).mean()
    figures = (
        f"harken: |Δp| {ours_delta:.4f}, agree {ours_agree:.3f}; XNNPACK: {xnn_delta:.4f}, {xnn_agree:.3f}"
    )
    # espeak-ng's audio varies a little between runs, so compare with LiteRT's own kernels on the same audio.
    assert ours_delta <= max(0.005, 1.3 * xnn_delta) and ours_delta < 0.01, figures
    assert ours_agree >= xnn_agree - 0.04 and ours_agree > 0.85, figures


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InteropError, match="no such file"):
        read_tflite(tmp_path / "missing.tflite")
    text = tmp_path / "notes.tflite"
    text.write_text("not a model")
    with pytest.raises(InteropError, match="notes.tflite: not a readable TFLite model"):
        read_tflite(text)
    if ARMSPEECH.is_file():
        truncated = tmp_path / "truncated.tflite"
        truncated.write_bytes(ARMSPEECH.read_bytes()[:100_000])
        with pytest.raises(InteropError, match="truncated.tflite: not a readable TFLite model"):
            read_tflite(truncated)


def test_models_that_are_not_deepspeech_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid .tflite without DeepSpeech's metadata tensors, and one with a metadata version from the
    future: one line each that says what was expected (the CLI too)."""
    from harken import cli

    if not ARMSPEECH.is_file():
        pytest.fail(f"{ARMSPEECH} is missing: `make test` fetches it (ArmSpeech's sdist from PyPI)")
    data = ARMSPEECH.read_bytes()
    other = tmp_path / "other.tflite"
    other.write_bytes(data.replace(b"metadata_", b"otherdata"))  # the same graph, its outputs renamed
    expected = "other.tflite: not a DeepSpeech/Coqui STT model (no metadata_version, metadata_sample_rate"
    with pytest.raises(InteropError, match=re.escape(expected)):
        read_tflite(other)
    assert cli.main(["transcribe", "--model", str(other), str(DATA / "LDC93S1.wav")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    future = tmp_path / "future.tflite"
    version_six = b"\x04\x00\x00\x00\x06\x00\x00\x00"  # a flatbuffer [ubyte] buffer: length 4, int32 6
    messages = []
    for offset in [m.start() for m in re.finditer(re.escape(version_six), data)]:
        future.write_bytes(data[: offset + 4] + (7).to_bytes(4, "little") + data[offset + 8 :])
        try:
            read_tflite(future)
        except InteropError as error:
            messages.append(str(error))
    assert messages == [f"{future}: metadata version 7, harken reads versions 1 to 6"]


def test_import_model_and_transcribe_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harken import cli
    from harken.audio import Synthesizer

    if not ARMSPEECH.is_file():
        pytest.fail(f"{ARMSPEECH} is missing: `make test` fetches it (ArmSpeech's sdist from PyPI)")
    pcm, rate = Synthesizer().speak("այսօր եղանակը շատ լավ է", "hy")
    wav = tmp_path / "hy.wav"
    audio.write(wav, audio.resample(audio.from_pcm16(pcm), rate, 16000), 16000)
    assert cli.main(["transcribe", "--model", str(ARMSPEECH), str(wav)]) == 0
    direct = capsys.readouterr().out.strip()
    assert len(direct) > 10 and set(direct) <= set(" աբգդեզէըթժիլխծկհձղճմյնշոչպջռսվտրցւփքևօֆ")
    assert cli.main(["import-model", str(ARMSPEECH), "--output", str(tmp_path / "ckpt")]) == 0
    assert "n_hidden 2048, 40 symbols + blank, 16000 Hz" in capsys.readouterr().out
    assert cli.main(["transcribe", "--checkpoint_dir", str(tmp_path / "ckpt"), str(wav)]) == 0
    assert capsys.readouterr().out.strip() == direct
    assert cli.main(["import-model", str(ARMSPEECH), "--output", str(tmp_path / "ckpt")]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err


@pytest.mark.slow
def test_fine_tuning_an_imported_model_lowers_its_loss(tmp_path: Path) -> None:
    """Import ArmSpeech, then `harken train --load_checkpoint_dir imported/ --save_checkpoint_dir mine/` on a
    few espeak-ng Armenian sentences: the training loss goes down and the result is a normal checkpoint."""
    from harken import checkpoint
    from harken.audio import Synthesizer
    from harken.config import CheckpointConfig, Config, DataConfig, RuntimeConfig, TrainConfig
    from harken.train import train

    if not ARMSPEECH.is_file():
        pytest.fail(f"{ARMSPEECH} is missing: `make test` fetches it (ArmSpeech's sdist from PyPI)")
    checkpoint.import_model(ARMSPEECH, tmp_path / "imported")
    synthesizer, rows = Synthesizer(), []
    for n, text in enumerate(
        ("բարև ձեզ", "այսօր եղանակը լավ է", "ես սիրում եմ քաղաքը", "մենք գնում ենք տուն")
    ):
        pcm, rate = synthesizer.speak(text, "hy")
        audio.write(tmp_path / f"{n}.wav", audio.resample(audio.from_pcm16(pcm), rate, 16000), 16000)
        rows.append(f"{n}.wav,0,{text}")
    csv = tmp_path / "hy.csv"
    csv.write_text("wav_filename,wav_filesize,transcript\n" + "\n".join(rows) + "\n", encoding="utf-8")
    alphabet = tmp_path / "alphabet.txt"
    alphabet.write_text(
        checkpoint.load_model(tmp_path / "imported").alphabet.to_file_text(), encoding="utf-8"
    )
    imported = checkpoint.load_model(tmp_path / "imported").dims
    config = Config(
        features=imported.features,
        model=imported.model_config(),
        data=DataConfig(
            train_files=str(csv), train_batch_size=2, alphabet_config_path=str(alphabet), num_workers=0
        ),
        checkpoint=CheckpointConfig(
            checkpoint_dir=str(tmp_path / "mine"), load_checkpoint_dir=str(tmp_path / "imported"),
            save_checkpoint_dir=str(tmp_path / "mine"),
        ),
        train=TrainConfig(epochs=3, learning_rate=0.0001),
        runtime=RuntimeConfig(show_progressbar=False),
    )  # fmt: skip
    logs: list[str] = []
    result = train(config, log=logs.append)
    losses = [row["train_loss"] for row in result.progress.history]
    assert any("Starting from" in line and "imported" in line for line in logs)
    assert losses[-1] < losses[0], losses
    assert checkpoint.load_model(tmp_path / "mine").dims.n_hidden == 2048
