"""Training throughput and feature-extraction speed of harken on this machine.

    .venv/bin/python bench/throughput.py [--n_hidden 256] [--batch 16] [--steps 20] [--device cpu]
        [--automatic_mixed_precision] [--device_features]

Prints audio seconds processed per wall second for training steps of the given geometry on a synthetic
corpus (built with harken's espeak-ng importer if missing), with the floating-point work that is (forward
+ backward ≈ 3 × the forward multiply-adds, 2 FLOPs each: 14.2 GFLOP per audio second at n_hidden 2048), so
the figure sits against the device's peak; ``--automatic_mixed_precision`` trains as harken's flag does
(bf16 autocast where the device has it), ``--device_features`` computes the MFCCs inside the timed step.
On a GPU: ``--device cuda --n_hidden 2048 --batch 32``, then 64, with and without the precision flag.
Then MFCC extraction speed as a multiple of
real time next to the peer, python_speech_features (the early DeepSpeech's front end; install it into the
venv to compare: it is not a harken dependency). No DeepSpeech training peer runs on Python 3.11.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from harken import audio, data, features, manifest
from harken.alphabet import Alphabet
from harken.config import FeatureConfig, ModelConfig
from harken.evaluate import batch_losses
from harken.importers import synthetic
from harken.model import DeepSpeech, choose_device
from harken.precision import choose_precision

ROOT = Path(__file__).resolve().parents[1]


def corpus() -> list[manifest.Sample]:
    target = ROOT / "runs" / "bench-corpus"
    if not (target / "train.csv").is_file():
        synthetic.prepare(target, synthetic.SyntheticConfig(n_sentences=150), progress=False)
    report = manifest.validate(manifest.read_csv(target / "train.csv"), Alphabet.default(), FeatureConfig())
    return report.kept


def flops_per_audio_second(n_hidden: int, n_input: int = 494, n_classes: int = 29) -> float:
    """Training FLOPs per second of audio (50 frames): 3 × the forward pass's multiply-adds, 2 FLOPs each."""
    h = n_hidden
    macs = n_input * h + 2 * h * h + 4 * h * (2 * h) + h * h + h * n_classes  # per frame
    return 2.0 * 3.0 * macs * 50


def train_throughput(
    samples: list[manifest.Sample],
    n_hidden: int,
    batch: int,
    steps: int,
    device: str,
    per_sample: bool = False,
    amp: bool = False,
    device_features: bool = False,
) -> float:
    """Audio seconds (or, ``per_sample``, samples) per second of training steps; two warm-up steps
    left out."""
    cfg, alphabet = FeatureConfig(), Alphabet.default()
    dev = choose_device(device)
    precision = choose_precision(amp, dev, print)
    model = DeepSpeech(cfg, ModelConfig(n_hidden=n_hidden), alphabet.n_classes).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches = data.sorted_batches(samples, batch)
    dataset = data.SpeechDataset(samples, alphabet, cfg, audio_only=device_features)
    loaded = [data.collate([dataset[i] for i in b]) for b in batches[len(batches) // 2 :][: steps + 2]]
    seconds, elapsed = 0.0, 0.0
    for index, b in enumerate(loaded):
        b = b.to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with precision.autocast():
            losses, _, _ = batch_losses(model, b, cfg)
        optimizer.zero_grad()
        precision.backward(losses.float().mean())
        precision.step(optimizer, model, 1.0, 0.0)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if index >= 2:  # warm-up
            elapsed += time.perf_counter() - start
            seconds += len(b) if per_sample else sum(samples[i].duration for i in b.indices)
    return seconds / elapsed


def mfcc_speed(samples: list[manifest.Sample]) -> float:
    cfg = FeatureConfig()
    waves = [torch.from_numpy(audio.read(s.path, 16000)) for s in samples[:100]]
    start = time.perf_counter()
    for wave in waves:
        features.mfcc(wave, cfg)
    return sum(len(w) for w in waves) / 16000 / (time.perf_counter() - start)


def peer_mfcc_speed(samples: list[manifest.Sample]) -> float | None:
    """python_speech_features.mfcc: the front end of the early DeepSpeech the seeds describe."""
    try:
        from python_speech_features import mfcc as psf_mfcc
    except ImportError:
        return None
    waves = [audio.read(s.path, 16000) for s in samples[:100]]
    start = time.perf_counter()
    for wave in waves:
        psf_mfcc(wave, samplerate=16000, winlen=0.032, winstep=0.02, numcep=26, nfilt=40, nfft=512)
    return sum(len(w) for w in waves) / 16000 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n_hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--automatic_mixed_precision", action="store_true")
    parser.add_argument("--device_features", action="store_true")
    args = parser.parse_args()
    samples = corpus()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    amp, on_device = args.automatic_mixed_precision, args.device_features
    rate = train_throughput(
        samples, args.n_hidden, args.batch, args.steps, args.device, amp=amp, device_features=on_device
    )
    flops = flops_per_audio_second(args.n_hidden)
    print(f"training, n_hidden {args.n_hidden}, batch {args.batch}: {rate:.1f} audio s / wall s "
          f"({flops / 1e9:.2f} GFLOP per audio second: {rate * flops / 1e12:.3f} TFLOP/s)")  # fmt: skip
    ours = mfcc_speed(samples)
    print(f"harken MFCC (torch, per utterance): {ours:.0f}x real time")
    theirs = peer_mfcc_speed(samples)
    if theirs is None:
        print("peer: pip install python_speech_features to compare with the early DeepSpeech's MFCC")
        return
    print(f"python_speech_features MFCC (numpy, per utterance): {theirs:.0f}x real time")
    print(f"ratio harken / python_speech_features: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
