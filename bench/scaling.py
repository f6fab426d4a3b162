"""Training throughput in 1 and 2 processes (torchrun; gloo on the CPU, NCCL on GPUs): audio s per wall s.

    .venv/bin/python bench/scaling.py [--n_hidden 256] [--batch 16] [--samples 320] [--epochs 4] [--amp]

Runs ``torchrun --standalone --nproc_per_node N -m harken train`` on the first --samples utterances of
the synthetic espeak-ng corpus (built with harken's importer if missing, as bench/throughput.py does),
with the same global batch for every N, and reads the epoch times harken prints. The first epoch
(start-up, first batches) is left out. Each configuration gets the machine's cores: N processes with
cores / N threads each, plus one process on a single thread to show the per-core figure. Features are
computed in the training processes (--num_workers 0) so that only the processes compete for the cores.
``--amp`` passes --automatic_mixed_precision (bfloat16 on GPUs and on CPUs with native bfloat16).
Bounded to about a minute on two cores with the defaults.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harken import manifest
from harken.alphabet import Alphabet
from harken.config import FeatureConfig
from harken.importers import synthetic

ROOT = Path(__file__).resolve().parents[1]
EPOCH = re.compile(r"^Epoch (\d+)/\d+: train loss \S+ \(([\d.]+) s\)", re.MULTILINE)


def corpus(samples: int) -> tuple[Path, float]:
    """The bench corpus's training CSV and the audio seconds of its first ``samples`` usable rows."""
    target = ROOT / "runs" / "bench-corpus"
    if not (target / "train.csv").is_file():
        synthetic.prepare(target, synthetic.SyntheticConfig(n_sentences=150), progress=False)
    csv = target / "train.csv"
    kept = manifest.validate(manifest.read_csv(csv), Alphabet.default(), FeatureConfig()).kept[:samples]
    return csv, sum(sample.duration for sample in kept)


def throughput(processes: int, threads: int, csv: Path, audio: float, args: argparse.Namespace) -> float:
    """Audio seconds trained per wall second, epochs after the first, in ``processes`` processes."""
    with tempfile.TemporaryDirectory() as directory:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "harken", "train", "--train_files", str(csv), "--limit_train", str(args.samples),
            "--n_hidden", str(args.n_hidden), "--train_batch_size", str(args.batch),
            "--epochs", str(args.epochs), "--checkpoint_dir", directory, "--num_workers", "0",
            "--noshow_progressbar", "--device", args.device,
            *(["--automatic_mixed_precision"] if args.amp else []),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"torchrun failed:\n{done.stdout}\n{done.stderr}")
    times = [float(seconds) for epoch, seconds in EPOCH.findall(done.stdout) if int(epoch) > 1]
    return audio / (sum(times) / len(times))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n_hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="the global batch, the same for every N")
    parser.add_argument("--samples", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", default="1,2", help="the process counts to compare")
    parser.add_argument("--amp", action="store_true", help="train with --automatic_mixed_precision")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    csv, audio = corpus(args.samples)
    print(
        f"{args.samples} utterances ({audio:.0f} s of audio), n_hidden {args.n_hidden}, global batch "
        f"{args.batch}, {cores} cores, device {args.device}{', mixed precision' if args.amp else ''}"
    )
    started = time.monotonic()
    counts = [int(n) for n in args.processes.split(",")]
    runs = [(1, 1)] + [(n, max(1, cores // n)) for n in counts]
    figures: dict[tuple[int, int], float] = {}
    for processes, threads in runs:
        if (processes, threads) in figures:
            continue
        figures[processes, threads] = rate = throughput(processes, threads, csv, audio, args)
        print(f"{processes} process(es) x {threads} thread(s): {rate:.1f} audio s / wall s")
    base = figures[counts[0], max(1, cores // counts[0])]
    for n in counts[1:]:
        print(f"scaling {counts[0]} -> {n} processes: {figures[n, max(1, cores // n)] / base:.2f}x")
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
