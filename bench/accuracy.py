"""WER of one checkpoint as torch, ONNX float and ONNX int8 on a test CSV, with the time each took.

    .venv/bin/python bench/accuracy.py --checkpoint_dir runs/demo/checkpoints \
        --test_files runs/demo/corpus/test.csv

Exports the checkpoint (float and int8) into <checkpoint_dir>/onnx if it is not there yet, then
transcribes every test sample with each and prints WER / CER against the references and against the
float model's transcripts. One thread, greedy decoding.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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
    results = {}
    for name, path in (("torch", args.checkpoint_dir), ("onnx float", out / "model.onnx"),
                       ("onnx int8", out / "model.int8.onnx")):  # fmt: skip
        model = Model(path, threads=1)
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


if __name__ == "__main__":
    main()
