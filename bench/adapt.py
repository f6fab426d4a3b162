"""`harken adapt` on a domain the demo model never heard: kitchen-appliance commands (docs/adaptation.md).

    .venv/bin/python bench/adapt.py --base runs/demo/checkpoints            # the worked example
    .venv/bin/python bench/adapt.py --base runs/demo/checkpoints --sweep    # + where fine-tuning stops paying
    .venv/bin/python bench/adapt.py --base runs/demo/checkpoints --orders   # + the scorer's order and pruning

The domain is made here (runs/bench-adapt/domain/): 600 distinct sentences from a kitchen command grammar
(ovens, kettles, defrosting, dishwasher modes: some 90 words the demo's 59-word grammar lacks); 40 of them
are the test sentences and are left out of the domain text; 150 others are recorded by six espeak-ng voices
(25 each; `recordings.csv`, with a speaker column, so that `harken adapt` splits whole voices off as dev
data); the test sentences are spoken by two more voices (`test.csv`). No voice is one the demo model was
trained or tested on, and no test clip is trained, tuned or chosen on: `--test_csv` is only measured.

`--sweep` fine-tunes on the first 0.5, 1 and 2 minutes of the training recordings (the same dev set)
and compares each with the base model and its tuned scorer on the test set: where the fine-tune stops
beating the scorer alone is what --min_finetune_minutes defaults to. `--orders` builds the scorer at
orders 2-5, unpruned and pruned '0 0 1', each tuned on dev, measured on test.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

import torch

from harken import audio, manifest
from harken.adaptation import AdaptConfig, Heard, adapt, hear, measure, prepare
from harken.audio.synthesizer import Synthesizer
from harken.decoder import BeamSettings
from harken.language_model import LmConfig, build
from harken.scorer import Scorer
from harken.tuning import TuneConfig, search_pair

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench-adapt"
RECORDING_VOICES = (
    "en-us+adam",
    "en-gb-x-rp+edward",
    "en+shelby",
    "en-029+quincy",
    "en-us+zac",
    "en-gb-scotland+iven",
)
TEST_VOICES = ("en-us+benjamin", "en-gb-x-rp+Lee")
SENTENCES, TEST_SENTENCES, RECORDED = 600, 40, 150
TRIALS = 30  # alpha/beta trials in --sweep and --orders (100 in the worked example): 2 cores' time

_APPLIANCES = ("microwave", "dishwasher", "blender", "kettle", "toaster", "oven", "fridge", "freezer")
_FOODS = ("chicken", "bread", "salmon", "peas", "pizza", "soup", "rice", "pasta", "bagel", "lasagna")
_COUNTS = ("two", "four", "twelve", "fifteen", "twenty", "thirty", "forty", "ninety")
_TEMPERATURES = ("three hundred", "three fifty", "four hundred", "four twenty five", "two hundred")
_MODES = ("eco", "quick", "heavy", "normal", "delicate")
_SPEEDS = ("low", "medium", "high")
_DRINKS = ("coffee", "espresso", "latte", "tea", "cappuccino")
_STRENGTHS = ("small", "medium", "large", "strong", "mild")
_BURNERS = ("stove", "hob", "burner", "extractor", "grill")
_TEMPLATES: tuple[tuple[tuple[str, ...] | str, ...], ...] = (
    ("preheat the oven to", _TEMPERATURES, "degrees"),
    ("set the microwave for", _COUNTS, ("minutes", "seconds")),
    ("defrost the", _FOODS, "for", _COUNTS, ("minutes", "seconds")),
    ("reheat the", _FOODS, "for", _COUNTS, ("minutes", "seconds")),
    ("set the oven to", _TEMPERATURES, "degrees for", _COUNTS, "minutes"),
    ("bake the", _FOODS, "at", _TEMPERATURES, "degrees"),
    ("put the", _FOODS, "in the", ("fridge", "freezer", "oven", "microwave")),
    ("take the", _FOODS, "out of the", ("fridge", "freezer", "oven", "microwave")),
    ("boil the kettle", ("now", "please", "for tea")),
    ("brew a", _STRENGTHS, _DRINKS),
    ("make me a", _STRENGTHS, _DRINKS, ("now", "please")),
    ("run the dishwasher on", _MODES, "mode"),
    ("set the fridge to", ("two", "three", "four", "five"), "degrees"),
    ("set the freezer to minus", ("fifteen", "eighteen", "twenty"), "degrees"),
    ("turn the", _BURNERS, ("on", "off")),
    ("blend on", _SPEEDS, "speed for", _COUNTS, "seconds"),
    ("toast the", ("bread", "bagel"), "on setting", ("three", "four", "five", "six")),
    ("add", _FOODS, "to the shopping list"),
    ("how long is left on the", _APPLIANCES),
    ("cancel the", ("timer", "oven", "microwave", "dishwasher", "blender")),
    ("grill the", _FOODS, "on", _SPEEDS, "heat"),
    ("keep the", _FOODS, "warm in the oven"),
)


def kitchen_sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct sentences of the kitchen grammar, the same for the same seed."""
    rng = random.Random(seed)
    found: dict[str, None] = {}
    for _ in range(1000 * n):
        if len(found) == n:
            break
        template = rng.choice(_TEMPLATES)
        found.setdefault(" ".join(p if isinstance(p, str) else rng.choice(p) for p in template), None)
    if len(found) < n:
        raise ValueError(f"the kitchen grammar has fewer than {n} sentences")
    return list(found)


def _speak(sentences: list[str], voices: list[str], folder: Path, prefix: str) -> list[list[str]]:
    """Each sentence spoken by its voice into folder/<prefix>-<n>.wav (once); CSV rows with the speaker."""
    synthesizer, rng, rows = Synthesizer(), random.Random(f"adapt:{prefix}"), []
    folder.mkdir(parents=True, exist_ok=True)
    for number, (text, voice) in enumerate(zip(sentences, voices, strict=True)):
        rate, pitch = rng.randint(140, 200), rng.randint(35, 65)
        path = folder / f"{prefix}-{number:04d}.wav"
        if not path.is_file():
            samples, native = synthesizer.speak(text, voice, rate, pitch)
            audio.write(path, audio.resample(audio.from_pcm16(samples), native, 16000), 16000)
        rows.append([f"wav/{path.name}", str(path.stat().st_size), text, voice])
    return rows


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["wav_filename", "wav_filesize", "transcript", "speaker"])
        writer.writerows(rows)
    return path


def make_domain(target: Path) -> tuple[Path, Path, Path]:
    """(kitchen.txt, recordings.csv, test.csv) of the worked example, made once."""
    sentences = kitchen_sentences(SENTENCES, seed=7)
    test, text = sentences[:TEST_SENTENCES], sentences[TEST_SENTENCES:]
    target.mkdir(parents=True, exist_ok=True)
    text_path = target / "kitchen.txt"
    text_path.write_text("\n".join(text) + "\n", encoding="utf-8")
    recorded = random.Random(11).sample(text, RECORDED)
    voices = [RECORDING_VOICES[i % len(RECORDING_VOICES)] for i in range(RECORDED)]
    recordings = _write(target / "recordings.csv", _speak(recorded, voices, target / "wav", "rec"))
    test_texts = [t for t in test for _ in TEST_VOICES]
    test_voices = [TEST_VOICES[i % len(TEST_VOICES)] for i in range(len(test_texts))]
    test_csv = _write(target / "test.csv", _speak(test_texts, test_voices, target / "wav", "test"))
    return text_path, recordings, test_csv


def sweep(base: Path, text: Path, output: Path, test_csv: Path, minutes: list[float]) -> None:
    """Fine-tune on the first N minutes of the training recordings (the dev set of ``output``'s run)."""
    train = manifest.read_csv(output / "data" / "train.csv")
    rows = [
        "| training audio | clips | test WER, base + tuned scorer | test WER, fine-tuned | fine-tune time |"
    ]
    rows.append("| --- | --- | --- | --- | --- |")
    for limit in minutes:
        chosen, seconds = [], 0.0
        for sample in train:
            if seconds >= limit * 60:
                break
            chosen.append(sample)
            seconds += audio.info(sample.path).duration
        folder = OUT / f"sweep-{limit:g}min"
        folder.mkdir(parents=True, exist_ok=True)
        manifest.write_csv(folder / "train.csv", chosen)
        config = AdaptConfig(
            text=text, output=folder / "out", checkpoint_dir=base, csv=folder / "train.csv",
            dev_csv=output / "data" / "dev.csv", test_csv=test_csv, min_finetune_minutes=0,
            n_trials=TRIALS, export_onnx=False, show_progressbar=False,
        )  # fmt: skip
        state = adapt(config, log=lambda _: None)
        tuned, tuned_more = state.steps["tuned"], state.steps["fine-tuned"]
        assert tuned.test is not None and tuned_more.test is not None
        rows.append(
            f"| {seconds / 60:.1f} min | {len(chosen)} | {tuned.test.wer:.1%} | {tuned_more.test.wer:.1%} "
            f"| {tuned_more.seconds:.0f} s |"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))


def orders(base: Path, text: Path, output: Path, test_csv: Path) -> None:
    """The scorer at orders 2-5, unpruned and pruned, each tuned on dev; test WER of each."""
    config = AdaptConfig(
        text=text, output=output, checkpoint_dir=base, dev_csv=output / "data" / "dev.csv",
        test_csv=test_csv, show_progressbar=False,
    )  # fmt: skip
    plan = prepare(config, log=lambda _: None)
    heard: Heard = hear(plan.model, plan, "base")
    print("| order | prune | dev WER (tuned) | test WER (tuned) | scorer size |")
    print("| --- | --- | --- | --- | --- |")
    for order in (2, 3, 4, 5):
        for prune in ((0,), (0, 0, 1)):
            if order < 3 and prune != (0,):
                continue
            path = OUT / "orders" / f"{order}-{''.join(map(str, prune))}.scorer"
            path.parent.mkdir(parents=True, exist_ok=True)
            build(
                LmConfig(text=(text,), output=path, order=order, prune=prune), plan.alphabet, lambda _: None
            )
            scorer = Scorer(path, plan.alphabet)
            texts = [s.transcript for s in plan.dev]
            found = search_pair(
                heard.dev, texts, (plan.alphabet, scorer, BeamSettings()), TuneConfig(100), False
            )
            dev, test = measure(plan, heard, scorer, (found.alpha, found.beta))
            print(
                f"| {order} | {' '.join(map(str, prune))} | {dev.wer:.1%} | {test.wer:.1%} "
                f"| {path.stat().st_size / 1e3:.0f} kB |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=Path, required=True, help="the base model's checkpoint directory")
    parser.add_argument("--sweep", action="store_true", help="also fine-tune on 0.5-2 minutes")
    parser.add_argument("--orders", action="store_true", help="also compare scorer orders and pruning")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two threads on two shared cores ran 40x slower here (docs/adaptation.md)
    text, recordings, test_csv = make_domain(OUT / "domain")
    output = OUT / "kitchen"
    started = time.perf_counter()
    adapt(AdaptConfig(text=text, output=output, checkpoint_dir=args.base, csv=recordings, test_csv=test_csv))
    print(f"harken adapt took {time.perf_counter() - started:.0f} s in all")
    if args.sweep:
        sweep(args.base, text, output, test_csv, [0.5, 1.0, 2.0])
    if args.orders:
        orders(args.base, text, output, test_csv)


if __name__ == "__main__":
    main()
