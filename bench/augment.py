"""Does augmentation starve training? Data-loading speed with --augment against what a training step eats.

    .venv/bin/python bench/augment.py [--n_hidden 256] [--batch 16] [--steps 8] [--samples 48]

On the synthetic espeak-ng corpus (built with harken's importer if missing, as bench/throughput.py does):

1. loading: samples per second one process turns into MFCC frames (read the wav, augment, MFCC) without
   augmentation, with DeepSpeech 0.9's documented example set of 13 augmentations (p=0.1 each, overlay
   p=0.5, noise from a made-up noise manifest), with the same set less ``codec`` (libsndfile's Opus
   encoder, the costliest by far), and with every one of them at p=1 (the worst case);
   each data-loader worker is one such process;
2. training: samples per second a training step (forward + CTC + backward + Adam) consumes at
   ``--n_hidden`` and ``--batch`` on this machine's cores, on the same features;
3. the ratio: how many times faster one loader process supplies samples than training uses them (> 1: one
   worker keeps up; the loader's workers run ahead by ``prefetch_factor`` batches each).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from throughput import corpus, train_throughput  # bench/ is on the path when run as a script

from harken import audio, features, manifest
from harken.alphabet import Alphabet
from harken.augment import Augmenter, sample_rng, training_clock
from harken.config import FeatureConfig

ROOT = Path(__file__).resolve().parents[1]
TYPICAL = [  # DeepSpeech 0.9's TRAINING.rst example, as documented (overlay's source made here)
    "overlay[p=0.5,source={noise},layers=1,snr=50:20~10]",
    "reverb[p=0.1,delay=50.0~30.0,decay=10.0:2.0~1.0]",
    "resample[p=0.1,rate=12000:8000~4000]",
    "codec[p=0.1,bitrate=48000:16000]",
    "volume[p=0.1,dbfs=-10:-40]",
    "pitch[p=0.1,pitch=1~0.2]",
    "tempo[p=0.1,factor=1~0.5]",
    "warp[p=0.1,nt=4,nf=1,wt=0.5:1.0,wf=0.1:0.2]",
    "frequency_mask[p=0.1,n=1:3,size=1:5]",
    "time_mask[p=0.1,domain=signal,n=3:10~2,size=50:100~40]",
    "dropout[p=0.1,rate=0.05]",
    "add[p=0.1,domain=signal,stddev=0~0.5]",
    "multiply[p=0.1,domain=features,stddev=0~0.5]",
]


def noise_manifest() -> Path:
    """Three 5 s noise files (white, brown, a 50 Hz hum with harmonics) and their manifest."""
    folder = ROOT / "runs" / "bench-augment-noise"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(80000) / 16000
    white = rng.standard_normal(80000)
    brown = np.cumsum(rng.standard_normal(80000))
    brown -= np.convolve(brown, np.ones(801) / 801, mode="same")  # no drift
    hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 6))
    for name, noise in (("white", white), ("brown", brown), ("hum", hum)):
        audio.write(folder / f"{name}.wav", (0.3 * noise / np.abs(noise).max()).astype(np.float32), 16000)
    with (folder / "noise.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["wav_filename"], ["white.wav"], ["brown.wav"], ["hum.wav"]])
    return folder / "noise.csv"


def loading_rate(samples: list[manifest.Sample], augmenter: Augmenter | None, alphabet: Alphabet) -> float:
    """Samples per second one process reads, augments and turns into MFCC frames (as a loader worker)."""
    cfg = FeatureConfig()
    start = time.perf_counter()
    for position, sample in enumerate(samples):
        waveform = audio.read(sample.path, cfg.audio_sample_rate)  # [n]
        if augmenter is None:
            features.mfcc(torch.from_numpy(waveform), cfg)
            continue
        labels = alphabet.encode(sample.transcript)
        clock = training_clock(0, 1, position, len(samples))
        augmenter.apply(waveform, clock, sample_rng(4568, 0, position), manifest.ctc_min_frames(labels))
    return len(samples) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n_hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--samples", type=int, default=48, help="utterances timed for loading")
    args = parser.parse_args()
    samples, alphabet, noise = corpus(), Alphabet.default(), noise_manifest()
    timed = samples[:: max(1, len(samples) // args.samples)][: args.samples]
    seconds = sum(s.duration for s in timed) / len(timed)
    cfg = FeatureConfig()
    typical = Augmenter([spec.format(noise=noise) for spec in TYPICAL], cfg)
    no_codec = Augmenter([spec.format(noise=noise) for spec in TYPICAL if not spec.startswith("codec")], cfg)
    every = Augmenter(
        [spec.format(noise=noise).replace("p=0.1", "p=1").replace("p=0.5", "p=1") for spec in TYPICAL], cfg
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads;"
        f" {len(timed)} utterances of {seconds:.1f} s on average"
    )
    loading_rate(timed[:4], every, alphabet)  # warm-up: imports, caches, first Opus encoder
    rates = {
        "no augmentation": loading_rate(timed, None, alphabet),
        "DeepSpeech's example set (13 specs, p=0.1/0.5)": loading_rate(timed, typical, alphabet),
        "the example set without codec (12 specs)": loading_rate(timed, no_codec, alphabet),
        "all 13 at p=1": loading_rate(timed, every, alphabet),
    }
    consumed = train_throughput(samples, args.n_hidden, args.batch, args.steps, "cpu", per_sample=True)
    print(f"training step, n_hidden {args.n_hidden}, batch {args.batch}: {consumed:.1f} samples/s consumed")
    for name, rate in rates.items():
        print(
            f"loading, one process, {name}: {rate:.1f} samples/s = {rate / consumed:.1f}x what training uses"
        )


if __name__ == "__main__":
    main()
