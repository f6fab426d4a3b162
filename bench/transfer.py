"""Fine-tuning a pre-trained model on a small set of other voices, levels and channels, against training from
scratch on the same small set.

    .venv/bin/python bench/transfer.py --pretrained runs/demo/checkpoints [--epochs 20]

The small set: the built-in grammar's sentences spoken by espeak-ng voices that no demo voice uses (other
accents and variants), every utterance through a telephone line at -35 to -20 dBFS with pink, brown or
room noise at 10-25 dB SNR. Training: four of those voices (about 120 utterances, under 5 minutes of
speech); test: two other voices of the same kind, their sentences never in either training set, put
through the same kind of line. Each recipe trains into runs/bench-transfer/<name>/ (re-running resumes,
so a finished recipe is only tested again); the test is greedy decoding, no scorer, one thread.

Recipes, all with --preset small_data: scratch (a new model, the same epochs), and fine-tuning the pre-trained
model (--load_checkpoint_dir) with every layer kept at two learning rates, and with the output layer
re-initialised (--drop_source_layers 1, what a new alphabet needs).
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from harken import audio, checkpoint, conditions, manifest, metrics
from harken.conditions import Conditions
from harken.config import (
    PRESETS,
    CheckpointConfig,
    Config,
    DataConfig,
    ModelConfig,
    RuntimeConfig,
    TrainConfig,
)
from harken.importers import synthetic
from harken.inference import Model
from harken.train import train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench-transfer"
VOICES = ("en-gb-x-gbcwmd+Alicia", "en-us+Gene", "en-029+linda", "en-gb-scotland+david")
TEST_VOICES = ("en-us-nyc+grandma", "en-gb-x-rp+Mike")
LINE = Conditions(
    max_lead=0.3,
    max_trail=0.3,
    noisy=1.0,
    snr=(10.0, 25.0),
    peak=(-35.0, -20.0),
    telephone=1.0,
    as_spoken=0.0,
)


def small_set() -> tuple[Path, Path]:
    """(train.csv, test.csv) of the small set, made once."""
    target = OUT / "corpus"
    config = synthetic.SyntheticConfig(
        n_sentences=80, train_voices=VOICES, test_voices=TEST_VOICES, heldout_fraction=0.25,
        heldout_repeats=2, dev_fraction=0.0, seed=99, conditions=LINE,
    )  # fmt: skip
    train_csv, _, test_csv = synthetic.prepare(target, config, progress=False)
    lined = target / "test-line.csv"
    if not lined.is_file():  # the test utterances through the same kind of line (the importer's are clean)
        rng = np.random.default_rng(5)
        rows = []
        for sample in manifest.read_csv(test_csv):
            wave = audio.read(sample.path, 16000)
            condition = conditions.draw(LINE, rng)
            path = target / "wav" / f"line-{sample.path.name}"
            audio.write(path, conditions.apply(wave, 16000, condition, rng), 16000)
            rows.append(manifest.Sample(path, path.stat().st_size, sample.transcript))
        manifest.write_csv(lined, rows)
    return train_csv, lined


def recipe(name: str, train_csv: Path, epochs: int, pretrained: Path | None, **changes: object) -> Path:
    save = OUT / name
    loading = {"load_checkpoint_dir": str(pretrained), "save_checkpoint_dir": str(save)} if pretrained else {}
    preset = PRESETS["small_data"]  # every recipe trains with --preset small_data
    config = Config(
        model=ModelConfig(n_hidden=256, **preset["model"]),
        data=DataConfig(train_files=str(train_csv), train_batch_size=16, **preset["data"]),
        checkpoint=CheckpointConfig(checkpoint_dir=str(save), **loading),  # type: ignore[arg-type]
        train=TrainConfig(epochs=epochs, learning_rate=0.001, **preset["train"]),
        runtime=RuntimeConfig(show_progressbar=False),
    )
    for section, values in changes.items():
        config = replace(config, **{section: replace(getattr(config, section), **values)})  # type: ignore[arg-type]
    started = time.perf_counter()
    train(config, log=lambda _: None)
    print(f"  {name}: trained in {time.perf_counter() - started:.0f} s")
    return save


def test(directory: Path, test_csv: Path) -> tuple[float, float]:
    model = Model(directory, threads=1)
    model.set_beam_width(1)
    samples = manifest.read_csv(test_csv)
    hyps = [model.stt(audio.to_pcm16(audio.read(s.path, 16000))) for s in samples]
    refs = [s.transcript for s in samples]
    return metrics.wer(refs, hyps), metrics.cer(refs, hyps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pretrained", type=Path, required=True, help="a checkpoint directory (n_hidden 256)"
    )
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    train_csv, test_csv = small_set()
    seconds = sum(audio.read(s.path, 16000).size for s in manifest.read_csv(train_csv)) / 16000
    with train_csv.open() as handle:
        count = sum(1 for _ in csv.reader(handle)) - 1
    print(f"small set: {count} training utterances ({seconds / 60:.1f} min), test {test_csv}")
    base = checkpoint.stored_dims(checkpoint.read(checkpoint.listing(args.pretrained, "best_dev")[-1]))
    print(f"pre-trained: {args.pretrained} (feature_norm {base.features.feature_norm})")
    wer, cer = test(args.pretrained, test_csv)
    print(f"  pre-trained as it is: WER {wer:.2%}  CER {cer:.2%}")
    e = args.epochs
    runs = {
        "scratch": recipe("scratch", train_csv, e, None),
        "fine-tune lr 1e-4": recipe("ft-1e-4", train_csv, e, args.pretrained, train={"learning_rate": 1e-4}),
        "fine-tune lr 1e-3": recipe("ft-1e-3", train_csv, e, args.pretrained),
        "fine-tune lr 1e-4, output layer new": recipe(
            "ft-drop1",
            train_csv,
            e,
            args.pretrained,
            train={"learning_rate": 1e-4},
            checkpoint={"drop_source_layers": 1},
        ),  # fmt: skip
    }
    for name, directory in runs.items():
        wer, cer = test(directory, test_csv)
        print(f"  {name:38s} WER {wer:7.2%}  CER {cer:6.2%}")


if __name__ == "__main__":
    main()
