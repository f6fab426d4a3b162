"""Hot phrases measured: recall of domain phrases a model never heard, before and after boosting, with and
without a scorer; the cost on sentences without them; decoding speed with 100 phrases loaded.

    .venv/bin/python bench/hotwords.py --checkpoint_dir runs/demo/checkpoints \\
        --scorer runs/demo/lm.scorer --test_files runs/demo/corpus/test.csv [--peer]

Two sets of clips are synthesised with espeak-ng (nothing downloaded): a **tuning** set (10 phrases, 3
carrier sentences, 2 voices) on which the boost is chosen, and a **held-out** set built differently (10
other phrases, other carrier sentences, 2 other voices) on which the chosen boost is reported. A phrase
counts as recalled when the transcript holds its words in order, whole. Each set is decoded with its own
phrase list loaded (what a user of that domain would load). The boost chosen is the smallest of the grid
whose recall on the tuning set is within 2 points of the grid's best while the WER on --test_files (the
model's own test sentences, which hold no phrase) moves by 0.3 points or less.

A model that cannot hear new words at all (the demo's 60-word model) recalls nothing at any boost. The
"model that can spell" of docs/benchmarks.md was made with:

    harken import synthetic runs/spell/corpus --text_file TEXT --n_sentences 1200
    harken train --n_hidden 256 --preset small_data --learning_rate 0.001 --epochs 10 \
        --train_files runs/spell/corpus/train.csv --dev_files runs/spell/corpus/dev.csv \
        --checkpoint_dir runs/spell/checkpoints
    harken lm build --text runs/spell/corpus/train.csv --order 3 --output runs/spell/lm.scorer

where TEXT is prose with none of the bench's phrase words (/usr/share/common-licenses and vim's user manual
cut into sentences of up to 9 words, the sentences holding a phrase word or name left out).

--peer adds pyctcdecode's hot words (bench-only: ``pip install kenlm pygtrie && pip install --no-deps
pyctcdecode``) on the same log-probs, at its default weight and at the weights of the grid.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode import log_probs_of  # noqa: E402  (bench/decode.py: the same log-probs)

from harken import audio, manifest, metrics  # noqa: E402
from harken.decoder import BeamSettings, Decoder  # noqa: E402
from harken.scorer import Scorer  # noqa: E402

TUNE_PHRASES = (
    "espresso machine", "fiona walker", "rice cooker", "garage gate", "sound bar",
    "kestrel nine", "toaster oven", "air purifier", "model zed four", "dish rack",
)  # fmt: skip
HELDOUT_PHRASES = (
    "coffee grinder", "marcus holt", "bread maker", "patio heater", "smart plug",
    "vortex seven", "ceiling fan", "water kettle", "unit kay two", "laundry dryer",
)  # fmt: skip
TUNE_CARRIERS = ("turn on the {}", "please move the {} left", "show me the {} now")
HELDOUT_CARRIERS = ("close the {} please", "set the {} to five minutes", "put the {} on the table")
TUNE_VOICES = ("en-us+m4", "en+f4")
HELDOUT_VOICES = ("en-gb-x-rp+gustave", "en-us+f5")
FIRST = ("anna", "boris", "carla", "dmitri", "elena", "felix", "greta", "hugo", "ingrid", "jonas")
LAST = ("abbot", "brandt", "castro", "dunmore", "ellery", "fischer", "gallo", "hobbs", "irwin", "jansen")


def synthesise(
    folder: Path, phrases: Sequence[str], carriers: Sequence[str], voices: Sequence[str]
) -> list[manifest.Sample]:
    """One clip per phrase x carrier x voice (16 kHz WAVs in ``folder``, made once)."""
    from harken.audio.synthesizer import Synthesizer

    speaker = Synthesizer()
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for p_index, phrase in enumerate(phrases):
        for c_index, carrier in enumerate(carriers):
            for voice in voices:
                text = carrier.format(phrase)
                path = folder / f"{p_index:02d}_{c_index}_{voice.replace('+', '_')}.wav"
                if not path.exists():
                    pcm, rate = speaker.speak(text, voice)
                    audio.write(path, audio.resample(audio.from_pcm16(pcm), rate, 16000), 16000)
                samples.append(manifest.Sample(path, path.stat().st_size, text))
    return samples


def recall(texts: Sequence[str], references: Sequence[str], phrases: Sequence[str]) -> tuple[float, int]:
    """(the share of the references' phrases found whole in the transcripts, the phrases found that the
    reference does not hold: false alarms)."""
    found = total = false = 0
    for text, reference in zip(texts, references, strict=True):
        said, heard = f" {reference} ", f" {' '.join(text.split())} "
        for phrase in phrases:
            wanted, got = said.count(f" {phrase} "), heard.count(f" {phrase} ")
            total += wanted
            found += min(wanted, got)
            false += max(0, got - wanted)
    return found / max(total, 1), false


def decode_all(
    decode: Callable[[np.ndarray], str], utterances: Sequence[np.ndarray]
) -> tuple[list[str], float]:
    start = time.perf_counter()
    texts = [" ".join(decode(u).split()) for u in utterances]
    return texts, time.perf_counter() - start


def harken_decoder(alphabet, scorer: Scorer | None, phrases: Sequence[str], boost: float):  # type: ignore[no-untyped-def]
    hot = {p: boost for p in phrases} if boost else {}
    search = Decoder(alphabet, BeamSettings(hot_words=hot), scorer)
    return lambda lp: search.decode(lp)[0].text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint_dir", type=Path, required=True)
    parser.add_argument("--scorer", type=Path, default=None)
    parser.add_argument("--test_files", required=True, help="sentences without the phrases: the cost")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-hotwords"))
    parser.add_argument("--grid", default="2,4,8,12,16,24", help="boosts per word tried on the tuning set")
    parser.add_argument("--scorer_only", action="store_true", help="only the search with --scorer")
    parser.add_argument("--peer", action="store_true", help="pyctcdecode's hot words on the same log-probs")
    parser.add_argument("--speed_only", action="store_true", help="only the speed, at the grid's first boost")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each (the fastest counts)")
    args = parser.parse_args()
    grid = [float(b) for b in args.grid.split(",")]
    sets = {
        "tuning": (TUNE_PHRASES, synthesise(args.work / "tune", TUNE_PHRASES, TUNE_CARRIERS, TUNE_VOICES)),
        "held-out": (
            HELDOUT_PHRASES,
            synthesise(args.work / "heldout", HELDOUT_PHRASES, HELDOUT_CARRIERS, HELDOUT_VOICES),
        ),
    }
    test = manifest.read_manifests(args.test_files)
    alphabet, step, test_lp = log_probs_of(args.checkpoint_dir, test)
    test_refs = [" ".join(s.transcript.split()) for s in test]
    lps = {name: log_probs_of(args.checkpoint_dir, samples)[2] for name, (_, samples) in sets.items()}
    refs = {name: [s.transcript for s in samples] for name, (_, samples) in sets.items()}
    scorers: dict[str, Scorer | None] = {} if args.scorer_only else {"no scorer": None}
    if args.scorer:
        scorers["scorer"] = Scorer(args.scorer, alphabet)
    hundred = [f"{a} {b}" for a in FIRST for b in LAST]
    for label, scorer in scorers.items():
        print(f"\n## {label}\n")
        print("| boost / word | tuning recall (false alarms) | held-out recall (false alarms) | test WER "
              "| WER change |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|")
        base_wer = None
        chosen = None
        rows = []
        for boost in [] if args.speed_only else [0.0, *grid]:
            tune_texts, _ = decode_all(harken_decoder(alphabet, scorer, TUNE_PHRASES, boost), lps["tuning"])
            held = harken_decoder(alphabet, scorer, HELDOUT_PHRASES, boost)
            held_texts, _ = decode_all(held, lps["held-out"])
            both = TUNE_PHRASES + HELDOUT_PHRASES
            test_texts, _ = decode_all(harken_decoder(alphabet, scorer, both, boost), test_lp)
            wer = metrics.wer(test_refs, test_texts)
            base_wer = wer if base_wer is None else base_wer
            (tune, tune_false), (held, held_false) = (recall(tune_texts, refs["tuning"], TUNE_PHRASES),
                recall(held_texts, refs["held-out"], HELDOUT_PHRASES))  # fmt: skip
            row = (boost, tune, held, wer, wer - base_wer)
            rows.append(row)
            print(f"| {boost:g} | {tune:.1%} ({tune_false}) | {held:.1%} ({held_false}) | {wer:.2%} | "
                  f"{100 * row[4]:+.2f} pts |")  # fmt: skip
        allowed = [r for r in rows[1:] if abs(r[4]) <= 0.003]
        if allowed:
            best = max(r[1] for r in allowed)
            chosen = min((r for r in allowed if r[1] >= best - 0.02), key=lambda r: r[0])
            print(f"\nchosen on the tuning set: boost {chosen[0]:g} -> held-out recall {chosen[2]:.1%} "
                  f"(unboosted {rows[0][2]:.1%}), test WER change {100 * chosen[4]:+.2f} pts")  # fmt: skip
        boost = chosen[0] if chosen else grid[0]
        seconds = sum(len(u) for u in test_lp) * step
        times: dict[str, list[float]] = {"none": [], "100 phrases": []}
        decoders = {"none": harken_decoder(alphabet, scorer, [], 0.0),
                    "100 phrases": harken_decoder(alphabet, scorer, hundred, boost)}  # fmt: skip
        for _ in range(args.repeats):  # in turn, so that a busy moment falls on both
            for name, decode in decoders.items():
                decode(test_lp[0])
                times[name].append(decode_all(decode, test_lp)[1])
        none, hundred_ms = (1000 * min(times[k]) / seconds for k in ("none", "100 phrases"))
        print(f"decode speed, {label}: none {none:.2f} ms / s of audio, 100 phrases at boost {boost:g} "
              f"{hundred_ms:.2f} ms ({hundred_ms / none:.2f}x)")  # fmt: skip
    if args.peer:
        peer(alphabet, args.scorer, lps, refs, grid)


def peer(alphabet, scorer_path: Path | None, lps, refs, grid: Sequence[float]) -> None:  # type: ignore[no-untyped-def]
    """pyctcdecode's hot words (its own unit: a weight per hot-word match) on the same log-probs."""
    import pyctcdecode

    labels = [*alphabet.symbols, ""]
    for label, lm in (("no scorer", None), ("scorer", scorer_path)):
        if lm is None and label == "scorer":
            continue
        search = pyctcdecode.build_ctcdecoder(labels, kenlm_model_path=str(lm) if lm else None)
        print(f"\n## pyctcdecode, {label}\n\n| hotword_weight | tuning recall (false alarms) | "
              "held-out recall (false alarms) |\n|---:|---:|---:|")  # fmt: skip
        for weight in [0.0, 10.0, *grid]:
            row = []
            for name, phrases in (("tuning", TUNE_PHRASES), ("held-out", HELDOUT_PHRASES)):
                hot = list(phrases) if weight else None
                texts = [
                    search.decode(lp, beam_width=16, hotwords=hot, hotword_weight=weight) for lp in lps[name]
                ]
                row.append("{:.1%} ({})".format(*recall(texts, refs[name], phrases)))
            print(f"| {weight:g} | {row[0]} | {row[1]} |")


if __name__ == "__main__":
    main()
