"""How models hold up on recording conditions they were not tested on: level, telephone, noise, silence.

    .venv/bin/python bench/robustness.py --test_files runs/demo/corpus/test.csv \
        demo=runs/demo/checkpoints [old=path/to/another/checkpoint_dir ...]

Each model (a checkpoint directory, ``.pt``, ``.onnx`` or ``.tflite``) transcribes the test set as it is
and put through conditions made by ``harken.conditions`` (never part of any training corpus as such: the
synthetic corpus draws its own): peak -3 dBFS and -30 dBFS, a telephone line (300-3400 Hz, 8 kHz mu-law),
pink noise at 20 dB SNR, and 1 s of quiet room tone before and after. Two channels built here, unlike
anything ``harken.conditions`` makes (held out from the corpus's telephone lines): plain 8 kHz audio
(polyphase resampling down and up, nothing else), and another line (200-3000 Hz, 8 kHz A-law, a 6 dB/octave
tilt). Greedy decoding, no scorer.

Then non-speech: 10 s of digital silence, white, pink and brown noise and room tone at several levels:
how many words each model says (the goal: none). And streams: the test clips with 1 s of room tone after
them fed in 20 ms pieces; the words the finals add beyond the reference (insertions), which is where a
phantom last word shows.

One row per model and condition: WER, CER and the change from "as is", in one run (side by side).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import jiwer
import numpy as np
import torch
from scipy import signal

from harken import audio, conditions, manifest, metrics
from harken.conditions import Condition
from harken.inference import Model

ROOM_DB = 40.0  # the room tone put around speech is this far under the speech's RMS


def _room_tone(wave: np.ndarray, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of room tone ROOM_DB under ``wave``'s RMS."""
    return conditions.noise("room", n, rate, rng) * (conditions.rms(wave) / 10 ** (ROOM_DB / 20))


def _eight_khz(wave: np.ndarray, rate: int) -> np.ndarray:
    """[n] at ``rate`` -> 8 kHz and back [n]: scipy's polyphase filter, no line."""
    low = signal.resample_poly(wave, 8000, rate)
    return audio.fit_length(signal.resample_poly(low, rate, 8000).astype(np.float32), len(wave))


def _other_line(wave: np.ndarray, rate: int) -> np.ndarray:
    """[n] at ``rate`` -> a line unlike harken.conditions.telephone: 200-3000 Hz, a first-order tilt, 8 kHz
    A-law (G.711's other companding), back to ``rate`` [n]."""
    low = signal.resample_poly(wave, 8000, rate)
    low = signal.sosfilt(signal.cheby1(3, 1.0, (200, 3000), btype="bandpass", fs=8000, output="sos"), low)
    low = signal.lfilter([1.0, -0.7], [1.0], low)  # rising with frequency
    low = low / max(1e-9, float(np.max(np.abs(low)))) * 0.5
    a = 87.6
    mag = np.abs(low)
    law = np.where(
        mag < 1 / a, a * mag / (1 + np.log(a)), (1 + np.log(np.maximum(a * mag, 1e-12))) / (1 + np.log(a))
    )
    law = np.round(np.sign(low) * law * 127) / 127  # 8 bits
    mag = np.abs(law) * (1 + np.log(a))
    back = np.sign(law) * np.where(mag < 1, mag / a, np.exp(mag - 1) / a)
    return audio.fit_length(signal.resample_poly(back, rate, 8000).astype(np.float32), len(wave))


def speech_conditions(rate: int) -> dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]]:
    """Name -> what it does to a test clip [n] (float32 in [-1, 1])."""

    def around(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        tone = _room_tone(wave, len(wave) + 2 * rate, rate, rng)
        return np.clip(np.pad(wave, (rate, rate)) + tone, -1, 1).astype(np.float32)

    return {
        "as is": lambda w, _: w,
        "peak -3 dBFS": lambda w, _: conditions.at_peak(w, -3.0),
        "peak -30 dBFS": lambda w, _: conditions.at_peak(w, -30.0),
        "telephone 8 kHz": lambda w, _: conditions.telephone(w, rate),
        "plain 8 kHz (held out)": lambda w, _: _eight_khz(w, rate),
        "other line (held out)": lambda w, _: _other_line(w, rate),
        "pink noise 20 dB": lambda w, rng: conditions.apply(
            w, rate, Condition(noise="pink", snr=20.0, peak=-6.0), rng
        ),  # fmt: skip
        "1 s room tone around": around,
    }


def _pcm(wave: np.ndarray) -> np.ndarray:
    return audio.to_pcm16(wave)  # what a 16-bit file of it holds


def transcribe(model: Model, waves: list[np.ndarray]) -> list[str]:
    return [" ".join(model.stt(_pcm(w)).split()) for w in waves]


def non_speech(model: Model, rate: int) -> dict[str, int]:
    """Words said on 10 s of each kind of non-speech."""
    rng = np.random.default_rng(7)
    n = 10 * rate
    clips = {"digital silence": np.zeros(n, np.float32)}
    for kind in conditions.NOISES:
        for peak in (-60.0, -30.0):
            clips[f"{kind} {peak:.0f} dBFS"] = conditions.at_peak(conditions.noise(kind, n, rate, rng), peak)
    return {name: len(model.stt(_pcm(clip)).split()) for name, clip in clips.items()}


def stream_insertions(
    model: Model, waves: list[np.ndarray], references: list[str], rate: int
) -> tuple[int, int]:
    """(inserted words, finals with any) over streams of the clips with 1 s of room tone after them."""
    rng = np.random.default_rng(11)
    step = rate // 50  # 20 ms
    inserted = finals = 0
    for wave, reference in zip(waves, references, strict=True):
        clip = np.concatenate([wave, _room_tone(wave, rate, rate, rng)]).astype(np.float32)
        pcm = _pcm(clip)
        stream = model.create_stream()
        for start in range(0, len(pcm), step):
            stream.feed_audio_content(pcm[start : start + step])
        text = " ".join(stream.finish_stream().split())
        count = jiwer.process_words(reference, text).insertions if text else 0
        inserted += count
        finals += count > 0
    return inserted, finals


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="NAME=PATH (a checkpoint directory, .pt, .onnx or .tflite)")
    parser.add_argument("--test_files", required=True)
    parser.add_argument("--limit", type=int, default=0, help="the first N test samples only (0: all)")
    parser.add_argument("--streams", type=int, default=30, help="how many clips to stream (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    samples = manifest.read_manifests(args.test_files)
    samples = samples[: args.limit] if args.limit else samples
    references = [" ".join(s.transcript.split()) for s in samples]
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        model = Model(Path(path), threads=1)
        model.set_beam_width(1)
        rate = model.sample_rate
        waves = [audio.read(s.path, rate) for s in samples]
        norm = model.dims.features.feature_norm
        print(f"\n{name} ({path}; feature_norm {norm}): {len(waves)} clips, greedy decoding")
        results[name] = {}
        for label, change in speech_conditions(rate).items():
            rng = np.random.default_rng(3)
            started = time.perf_counter()
            hypotheses = transcribe(model, [change(w, rng) for w in waves])
            wer, cer = metrics.wer(references, hypotheses), metrics.cer(references, hypotheses)
            results[name][label] = (wer, cer)
            base = results[name]["as is"][0]
            print(f"  {label:22s} WER {wer:7.2%}  CER {cer:6.2%}  ({wer - base:+.2%} vs as is)"
                  f"  {time.perf_counter() - started:5.1f} s")  # fmt: skip
        said = non_speech(model, rate)
        print("  words said on 10 s of: " + ", ".join(f"{k} {v}" for k, v in said.items()))
        if args.streams:
            count = min(args.streams, len(waves))
            inserted, finals = stream_insertions(model, waves[:count], references[:count], rate)
            print(f"  streams (20 ms pieces, 1 s room tone after): {inserted} inserted words, "
                  f"{finals} of {count} finals with any")  # fmt: skip
    if len(results) > 1:
        print("\nWER side by side: " + " | ".join(results))
        for label in next(iter(results.values())):
            print(f"  {label:22s} " + " | ".join(f"{r[label][0]:7.2%}" for r in results.values()))


if __name__ == "__main__":
    main()
