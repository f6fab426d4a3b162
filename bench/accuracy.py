"""WER of one checkpoint as torch, ONNX float and ONNX int8 on a test CSV, with the time each took.

    .venv/bin/python bench/accuracy.py --checkpoint_dir runs/demo/checkpoints \
        --test_files runs/demo/corpus/test.csv

Exports the checkpoint (float and int8) into <checkpoint_dir>/onnx if it is not there yet, then
transcribes every test sample with each and prints WER / CER against the references and against the
float model's transcripts. One thread, greedy decoding.

``--long 30`` instead joins consecutive test utterances (half a second of silence between) into recordings
of about 30 s and compares the two ways ``Model.stt`` runs a long recording through each ONNX model: one
pass, and (the default) stretches side by side through the LSTM (``batch_segments``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from harken import audio, checkpoint, export, manifest, metrics
from harken.config import ExportConfig
from harken.inference import Model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint_dir", type=Path, required=True)
    parser.add_argument("--test_files", required=True)
    parser.add_argument("--long", type=float, default=0.0, help="join utterances into recordings this long")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.checkpoint_dir / "onnx"
    if not (out / "model.int8.onnx").is_file():
        samples = manifest.read_manifests(args.test_files)
        export.export(
            checkpoint.load_model(args.checkpoint_dir), ExportConfig(export_dir=str(out), quantize="int8"),
            samples[0].path,
        )  # fmt: skip
    samples = manifest.read_manifests(args.test_files)
    rate = Model(out / "model.onnx").sample_rate
    waves = [audio.read(s.path, rate) for s in samples]
    references = [s.transcript for s in samples]
    seconds = sum(len(w) for w in waves) / rate
    if args.long:
        return long_recordings(out, waves, references, rate, args.long)
    results = {}
    for name, path in (("torch", args.checkpoint_dir), ("onnx float", out / "model.onnx"),
                       ("onnx int8", out / "model.int8.onnx")):  # fmt: skip
        model = Model(path, threads=1)
        model.set_beam_width(1)
        start = time.perf_counter()
        results[name] = [" ".join(model.stt(w).split()) for w in waves]
        elapsed = time.perf_counter() - start
        print(f"{name:10s}: WER {metrics.wer(references, results[name]):.3%}  "
              f"CER {metrics.cer(references, results[name]):.3%}  RTF {elapsed / seconds:.4f}")  # fmt: skip
    float_text = results["onnx float"]
    print(
        f"int8 vs float transcripts: WER {metrics.wer(float_text, results['onnx int8']):.3%}, "
        f"CER {metrics.cer(float_text, results['onnx int8']):.3%} ({len(samples)} samples, {seconds:.0f} s)"
    )


def long_recordings(out: Path, waves: list, references: list[str], rate: int, length: float) -> None:
    """WER and time of one pass vs stretches side by side on recordings of about ``length`` seconds."""
    joined: list[tuple[list, list[str]]] = [([], [])]
    for wave, text in zip(waves, references, strict=True):
        if sum(len(w) for w in joined[-1][0]) >= length * rate:
            joined.append(([], []))
        joined[-1][0].extend([wave, np.zeros(rate // 2, np.float32)])
        joined[-1][1].append(text)
    recordings = [np.concatenate(parts) for parts, _ in joined]
    truth = [" ".join(texts) for _, texts in joined]
    seconds = sum(len(r) for r in recordings) / rate
    print(f"{len(recordings)} recordings, {seconds:.0f} s (about {length:.0f} s each)")
    for name in ("model.onnx", "model.int8.onnx"):
        texts = {}
        for segments in (1, 4):
            model = Model(out / name, threads=1, batch_segments=segments)
            model.set_beam_width(1)  # greedy: the comparison is of the acoustic model
            start = time.perf_counter()
            texts[segments] = [" ".join(model.stt(r).split()) for r in recordings]
            elapsed = time.perf_counter() - start
            print(f"{name:16s} batch_segments {segments}: WER {metrics.wer(truth, texts[segments]):.3%}  "
                  f"CER {metrics.cer(truth, texts[segments]):.3%}  RTF {elapsed / seconds:.4f}")  # fmt: skip
        print(f"{'':16s} side by side vs one pass: WER {metrics.wer(texts[1], texts[4]):.3%}")


if __name__ == "__main__":
    main()
