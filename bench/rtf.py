"""Real-time factor of a real DeepSpeech-family model (ArmSpeech) in DeepSpeech's runtime and in harken.

    .venv/bin/python bench/rtf.py [--threads 1] [--seconds 20]

Same audio (espeak-ng Armenian, about --seconds long), one run each: LiteRT with its builtin kernels in
16-frame steps (what DeepSpeech's client ran), harken on torch, and harken's ONNX export (float and int8)
whole-file (by default long audio runs as 4 stretches side by side through the LSTM; "one pass" is
batch_segments=1, exactly a stream's computation) and in 320 ms streaming steps, and beside them the int8
file harken export wrote before its per-row int8 graph (onnxruntime's quantize_dynamic of the float
graph). Prints RTF (processing time / audio time), ratios to LiteRT, and each transcript's CER against
LiteRT's and against the text spoken (all decoded greedily: the comparison is of the acoustic model).
Needs .cache/armspeech/model.tflite (`make test` fetches it).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from harken import audio, checkpoint, decoder, export, features, metrics
from harken.audio import Synthesizer
from harken.config import ExportConfig
from harken.inference import Model
from harken.interop.tflite import run_litert

ROOT = Path(__file__).resolve().parents[1]
TFLITE = ROOT / ".cache" / "armspeech" / "model.tflite"
WORK = ROOT / "runs" / "bench-armspeech"
SENTENCES = ("բարև ձեզ ինչպես եք", "այսօր եղանակը շատ լավ է", "ես սիրում եմ իմ քաղաքը", "մենք գնում ենք տուն")


def speech(seconds: float) -> tuple[np.ndarray, str]:
    """About ``seconds`` of the sentences spoken by espeak-ng, and what was said."""
    synthesizer, pieces, said, total = Synthesizer(), [], [], 0.0
    while total < seconds:
        for text in SENTENCES:
            pcm, rate = synthesizer.speak(text, "hy")
            pieces.append(audio.resample(audio.from_pcm16(pcm), rate, 16000))
            said.append(text)
            total += len(pieces[-1]) / 16000
    return audio.from_pcm16(audio.to_pcm16(np.concatenate(pieces))), " ".join(said)


def exported() -> tuple[Path, Path]:
    if not (WORK / "onnx" / "model.int8.onnx").is_file():
        if not checkpoint.listing_any(WORK / "ckpt"):
            checkpoint.import_model(TFLITE, WORK / "ckpt")
        loaded = checkpoint.load_model(WORK / "ckpt")
        wav = WORK / "check.wav"
        audio.write(wav, speech(3.0)[0], 16000)
        # espeak-ng's samples differ between its builds, and ArmSpeech transcribes them poorly: the export's
        # transcript check would decide by chance whether the bench runs. The bench measures accuracy itself.
        options = ExportConfig(export_dir=str(WORK / "onnx"), quantize="int8")
        for result in export.export(loaded, options, wav, enforce_int8=False):
            print(result.parity)
    return WORK / "onnx" / "model.onnx", WORK / "onnx" / "model.int8.onnx"


def previous_export(float_path: Path) -> Path:
    """What harken export --quantize int8 wrote before: onnxruntime's dynamic quantization of the graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = WORK / "onnx-previous" / "model.int8.onnx"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        logging.disable(logging.WARNING)  # its advice about pre-processing, on the root logger
        quantize_dynamic(str(float_path), str(target), weight_type=QuantType.QInt8)
        logging.disable(logging.NOTSET)
    return target


def litert(samples: np.ndarray, threads: int) -> tuple[float, np.ndarray]:
    """DeepSpeech's runtime: features (identical to LiteRT's own ops) then the model in 16-frame steps."""
    cfg = checkpoint.load_model(WORK / "ckpt").dims.features
    start = time.perf_counter()
    windows = features.utterance_windows(torch.from_numpy(samples), cfg)
    probabilities = run_litert(TFLITE, windows.numpy(), threads=threads, builtin=True)
    return time.perf_counter() - start, np.log(probabilities + 1e-30)


def timed(model: Model, samples: np.ndarray, step: int | None) -> tuple[float, str]:
    model.stt(samples[:16000])  # warm-up
    start = time.perf_counter()
    if step is None:
        text = model.stt(samples)
    else:
        stream = model.create_stream()
        for offset in range(0, len(samples), step):
            stream.feed_audio_content(samples[offset : offset + step])
        text = stream.finish_stream()
    return time.perf_counter() - start, text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    float_path, int8_path = exported()
    samples, truth = speech(args.seconds)
    duration = len(samples) / 16000
    torch.set_num_threads(args.threads)
    base_time, log_probs = litert(samples, args.threads)
    alphabet = checkpoint.load_model(WORK / "ckpt").alphabet
    reference = decoder.greedy(torch.from_numpy(log_probs), len(log_probs), alphabet).text
    print(f"{duration:.1f} s of audio, {args.threads} thread(s); RTF = processing time / audio time")
    truth_cer = metrics.char_errors(truth, " ".join(reference.split())).rate
    print(f"{'LiteRT builtin, 16-frame steps':40s} RTF {base_time / duration:.3f}  "
          f"{'':27s}CER vs the text {truth_cer:.1%}")  # fmt: skip
    runs = [("harken torch, whole file", WORK / "ckpt", None, 4),
            ("harken ONNX float, whole file", float_path, None, 4),
            ("harken ONNX int8, whole file, one pass", int8_path, None, 1),
            ("harken ONNX int8, whole file", int8_path, None, 4),
            ("harken ONNX int8, 320 ms stream steps", int8_path, 5120, 1),
            ("previous int8 export, one pass", previous_export(float_path), None, 1),
            ("previous int8 export, 320 ms steps", previous_export(float_path), 5120, 1)]  # fmt: skip
    for name, path, step, segments in runs:
        model = Model(path, threads=args.threads, batch_segments=segments)
        model.set_beam_width(1)  # greedy, as the reference: LiteRT's figure has no decoder in it
        elapsed, text = timed(model, samples, step)
        cer = metrics.char_errors(" ".join(reference.split()), " ".join(text.split())).rate
        truth_cer = metrics.char_errors(truth, " ".join(text.split())).rate
        print(f"{name:40s} RTF {elapsed / duration:.3f}  {base_time / elapsed:4.1f}x LiteRT  "
              f"CER vs LiteRT {cer:.1%}, vs the text {truth_cer:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
