"""Training throughput and feature-extraction speed of harken on this machine.

    .venv/bin/python bench/throughput.py [--n_hidden 256] [--batch 16] [--steps 20] [--device cpu]

Prints audio seconds processed per wall second for training steps of the given geometry on a synthetic
corpus (built with harken's espeak-ng importer if missing), and MFCC extraction speed as a multiple of
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

ROOT = Path(__file__).resolve().parents[1]


def corpus() -> list[manifest.Sample]:
    target = ROOT / "runs" / "bench-corpus"
    if not (target / "train.csv").is_file():
        synthetic.prepare(target, synthetic.SyntheticConfig(n_sentences=150), progress=False)
    report = manifest.validate(manifest.read_csv(target / "train.csv"), Alphabet.default(), FeatureConfig())
    return report.kept


def train_throughput(
    samples: list[manifest.Sample],
    n_hidden: int,
    batch: int,
    steps: int,
    device: str,
    per_sample: bool = False,
) -> float:
    """Audio seconds (or, ``per_sample``, samples) per second of training steps; two warm-up steps
    left out."""
    cfg, alphabet = FeatureConfig(), Alphabet.default()
    dev = choose_device(device)
    model = DeepSpeech(cfg, ModelConfig(n_hidden=n_hidden), alphabet.n_classes).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches = data.sorted_batches(samples, batch)
    dataset = data.SpeechDataset(samples, alphabet, cfg)
    loaded = [data.collate([dataset[i] for i in b]) for b in batches[len(batches) // 2 :][: steps + 2]]
    seconds, elapsed = 0.0, 0.0
    for index, b in enumerate(loaded):
        b = b.to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        losses, _, _ = batch_losses(model, b, cfg.n_context)
        optimizer.zero_grad()
        losses.mean().backward()
        optimizer.step()
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
    args = parser.parse_args()
    samples = corpus()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    rate = train_throughput(samples, args.n_hidden, args.batch, args.steps, args.device)
    print(f"training, n_hidden {args.n_hidden}, batch {args.batch}: {rate:.1f} audio s / wall s")
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
