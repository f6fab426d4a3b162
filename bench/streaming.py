"""Streaming cost of harken's inference: 20 ms chunks in real-time order, on one thread.

    .venv/bin/python bench/streaming.py [--threads 1] [--seconds 10]

For the demo geometry (runs/demo, `make demo`) and the full 2048 geometry (ArmSpeech, imported from
.cache/armspeech/model.tflite by bench/rtf.py), each as ONNX float and int8: feed 20 ms chunks of speech
one after another, timing each feed (cost per chunk; a chunk that takes over 20 ms falls behind real
time) and the final result after the last chunk (finish_stream: the last context frames, the model and
the decoder's end). Also the whole-file RTF, the multiply-adds per audio second (so the figures sit beside
the machine's floor) and the weight bytes the model reads per step. Decoding: greedy and the default beam.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from harken import audio, checkpoint, export
from harken.config import ExportConfig
from harken.inference import Model

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "runs" / "demo"
ARMSPEECH = ROOT / "runs" / "bench-armspeech"


def macs_per_frame(n_input: int, n_hidden: int, n_classes: int) -> int:
    """Multiply-adds of one frame: three dense layers, the LSTM (4 gates over [input, h]), two more."""
    return (
        n_input * n_hidden
        + 2 * n_hidden**2
        + 4 * n_hidden * 2 * n_hidden
        + n_hidden**2
        + n_hidden * n_classes
    )


def demo_models() -> tuple[Path, Path] | None:
    onnx = DEMO / "export" / "model.onnx"
    if not onnx.is_file():
        if not (DEMO / "checkpoints").is_dir():
            return None
        loaded = checkpoint.load_model(DEMO / "checkpoints")
        test = next((DEMO / "corpus" / "wav").rglob("*.wav"), None)
        export.export(loaded, ExportConfig(export_dir=str(onnx.parent), quantize="int8"), test)
    return onnx, onnx.with_name("model.int8.onnx")


def stream(model: Model, pcm: np.ndarray, chunk: int) -> tuple[list[float], float, str]:
    """Per-chunk feed times, the finish time (s) and the final text."""
    s = model.create_stream()
    feeds = []
    for start in range(0, len(pcm), chunk):
        begin = time.perf_counter()
        s.feed_audio_content(pcm[start : start + chunk])
        s.intermediate_decode()
        feeds.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    text = s.finish_stream()
    return feeds, time.perf_counter() - begin, text


def measure(name: str, path: Path, pcm: np.ndarray, threads: int) -> None:
    model = Model(path, threads=threads)
    seconds = len(pcm) / model.sample_rate
    cfg, n_hidden = model.dims.features, model.backend.n_hidden
    macs = macs_per_frame(cfg.n_input, n_hidden, model.alphabet.n_classes) * 1000 // cfg.feature_win_step
    weight_bytes = path.stat().st_size
    for label, width in (("greedy", 1), ("beam 500", 500)):
        model.set_beam_width(width)
        begin = time.perf_counter()
        model.stt(pcm)
        whole = time.perf_counter() - begin
        feeds, finish, _ = stream(model, pcm, model.sample_rate // 50)
        feeds_ms = np.array(feeds) * 1000
        print(
            f"| {name} | {label} | {whole / seconds:.3f} | {feeds_ms.mean():.2f} | "
            f"{np.percentile(feeds_ms, 95):.2f} | {feeds_ms.max():.1f} | {finish * 1000:.0f} | "
            f"{macs / 1e9:.2f} | {weight_bytes / 1e6:.1f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models: list[tuple[str, Path]] = []
    demo = demo_models()
    if demo is not None:
        models += [("demo (256) float", demo[0]), ("demo (256) int8", demo[1])]
    if (ARMSPEECH / "onnx" / "model.onnx").is_file():
        models += [
            ("ArmSpeech (2048) float", ARMSPEECH / "onnx" / "model.onnx"),
            ("ArmSpeech (2048) int8", ARMSPEECH / "onnx" / "model.int8.onnx"),
        ]
    if not models:
        raise SystemExit("no models: run `make demo` and bench/rtf.py first")
    wav = next((DEMO / "corpus" / "wav").rglob("*.wav"), ROOT / "tests" / "data" / "LDC93S1.wav")
    speech = audio.read(wav, 16000)
    pcm = audio.to_pcm16(
        np.tile(speech, int(np.ceil(args.seconds * 16000 / len(speech))))[: int(args.seconds * 16000)]
    )
    print(f"{args.seconds:.0f} s of speech ({wav.name} repeated), {args.threads} thread(s), 20 ms chunks\n")
    columns = ["model", "decoding", "whole-file RTF", "ms per 20 ms chunk (mean)", "p95", "max",
               "final after last chunk (ms)", "GMAC per audio second", "model MB read per step"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, path in models:
        measure(name, path, pcm, args.threads)


if __name__ == "__main__":
    main()
