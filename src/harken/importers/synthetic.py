"""A synthetic English speech corpus, spoken offline by espeak-ng (harken.audio.synthesizer): the demo's
training data.

Sentences come from a small built-in command grammar (59 words: colours, numbers, objects, directions)
or from a text file. A ``heldout_fraction`` of the sentences is kept out of training: each of those is
spoken by ``heldout_repeats`` held-out voices, a ``dev_fraction`` of them forming the dev set and the rest
the test set, so dev and test measure speakers *and* sentences the model never heard (the words are
shared). Every other sentence is spoken by two or three training voices. A voice is an espeak-ng
language voice plus a variant, e.g. ``"en-us+f2"``: the language voice sets the accent, the variant
(a file in ``espeak-ng-data/voices/!v``) the timbre and pitch.

``prepare`` writes ``wav/<id>.wav`` (mono 16-bit PCM) and DeepSpeech CSVs (``train.csv``, ``dev.csv``,
``test.csv``). It is resumable: existing wavs are kept, and every file is written to a temporary name and
renamed into place, so an interrupted run never leaves a truncated file behind. Wav names carry a short hash
of what they say and how, so changing the configuration never reuses stale audio. The synthesizer gives
the same samples for the same text, voice, rate and pitch, so the same seed gives the same corpus.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harken import audio, conditions, manifest
from harken.audio.synthesizer import Synthesizer
from harken.conditions import Condition, Conditions
from harken.config import comma_list, option, require

__all__ = ["SyntheticConfig", "prepare", "sentences"]

_SPLITS = ("train", "dev", "test")
_PREFIX = {"train": "tr", "dev": "dv", "test": "te"}
_SENTENCE = re.compile(r"[a-z' ]*[a-z][a-z' ]*")


# --------------------------------------------------------------------------------------------------------
# The built-in grammar. Homophones of other words ("two"/"to", "four"/"for") are left out on purpose: a
# character model without a language model could not tell them apart.

_COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple")
_NUMBERS = ("one", "three", "five", "six", "seven", "eight", "nine", "ten")
_THINGS = ("box", "ball", "cup", "book")
_DEVICES = ("lamp", "light", "fan", "radio", "heater")
_OPENABLE = ("door", "window", "box")
_PLACES = ("table", "chair", "shelf")
_DIRECTIONS = ("left", "right", "up", "down")
_SIZES = ("big", "small")
_UNITS = ("minutes", "seconds")
_TEMPLATES: tuple[tuple[tuple[str, ...] | str, ...], ...] = (
    ("turn the", _COLOURS, _DEVICES, ("on", "off")),
    ("turn", ("on", "off"), "the", _DEVICES, ("now", "please")),
    ("set the timer to", _NUMBERS, _UNITS),
    ("set the", _DEVICES, "to level", _NUMBERS),
    ("move the", _COLOURS, _THINGS, _NUMBERS[1:], "steps", _DIRECTIONS),
    ("move the", _SIZES, _THINGS, _DIRECTIONS),
    ("show me the", _COLOURS, _OPENABLE),
    ("show me the", _SIZES, _COLOURS, _THINGS),
    (("open", "close"), "the", _COLOURS, _OPENABLE),
    (("open", "close"), "the", _OPENABLE, ("now", "please")),
    ("put the", _COLOURS, _THINGS, "on the", _PLACES),
    ("pick up the", _SIZES, _COLOURS, _THINGS),
    ("please stop the", _DEVICES, "now"),
    ("start the", _DEVICES, "in", _NUMBERS, _UNITS),
)


def _draw(template: tuple[tuple[str, ...] | str, ...], rng: random.Random) -> str:
    return " ".join(part if isinstance(part, str) else rng.choice(part) for part in template)


def sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct sentences from the built-in grammar, the same for the same seed.

    Only ``a``-``z``, apostrophe and single spaces occur; 4 to 8 words each.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    found: dict[str, None] = {}
    attempts = 0
    while len(found) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"the built-in grammar cannot produce {n} distinct sentences")
        found.setdefault(_draw(rng.choice(_TEMPLATES), rng), None)
    return list(found)


def _read_sentences(path: Path, n: int) -> list[str]:
    """The first ``n`` distinct sentences of a text file, one per line; blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read sentences ({error})") from None
    found: dict[str, None] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if not _SENTENCE.fullmatch(text):
            bad = sorted({c for c in text if not ("a" <= c <= "z" or c in "' ")})
            shown = ", ".join(repr(c) for c in bad) or "no letter"
            raise ValueError(f"{path}:{number}: only a-z, apostrophe and space are allowed (found {shown})")
        found.setdefault(" ".join(text.split()), None)
    if not found:
        raise ValueError(f"{path}: no sentences (the file is empty or blank)")
    return list(found)[:n]


# --------------------------------------------------------------------------------------------------------
# Voices: a language voice (accent) plus a variant (timbre, pitch). The held-out voices use variants that no
# training voice uses, with accents the training voices cover.

_TRAIN_VOICES = (
    "en+m1",
    "en-us+m2",
    "en-gb-x-rp+m3",
    "en-gb-scotland+m5",
    "en-us+m6",
    "en+m7",
    "en-029+m8",
    "en-us-nyc+travis",
    "en+Andy",
    "en-gb-x-rp+robert",
    "en-us+Michael",
    "en-us+klatt3",
    "en-us+f1",
    "en+f2",
    "en-gb-x-rp+f3",
    "en-us+belinda",
    "en+steph",
    "en-gb-x-gbclan+Annie",
    "en-us+anika",
    "en-gb-x-rp+aunty",
)
_TEST_VOICES = ("en-us+m4", "en+f4", "en-gb-x-rp+gustave", "en-us+f5")
_RATES = (140, 200)  # words per minute, drawn uniformly per utterance
_PITCHES = (35, 65)  # espeak pitch parameter (50 = the voice's own), drawn uniformly per utterance


@dataclass(frozen=True)
class SyntheticConfig:
    """What to synthesise. The defaults make about 1200 utterances (0.5 h of audio) in about 5 s."""

    n_sentences: int = option(500, "distinct sentences")
    train_voices: tuple[str, ...] = option(
        _TRAIN_VOICES, "comma-separated espeak-ng voices for training, e.g. en+m1,en-us+f2", parse=comma_list,
        metavar="VOICES",
    )  # fmt: skip
    test_voices: tuple[str, ...] = option(
        _TEST_VOICES, "comma-separated held-out voices for dev and test", parse=comma_list, metavar="VOICES"
    )
    heldout_fraction: float = option(0.2, "share of the sentences never in train, only in dev and test")
    heldout_repeats: int = option(2, "how many held-out voices say each dev/test sentence")
    dev_fraction: float = option(0.25, "share of the held-out sentences in dev; the rest are the test set")
    sample_rate: int = option(16000, "sample rate of the wavs written")
    seed: int = option(1234, "of the sentences, voices and recording conditions")
    text_file: Path | None = option(None, "one sentence per line (default: the built-in command grammar)")
    clean: bool = option(
        False,
        "training speech alone, as espeak-ng says it (default: half of it as spoken, half with silence "
        "around it, background noise or a telephone line, all at levels from -35 to -1 dBFS, and recordings "
        "with nobody speaking, as real recordings have)",
    )
    # How the training utterances are "recorded" (silence around them, noise, level, telephone lines), so
    # that the corpus stands in for real recordings; None (or clean): speech alone. Dev and test stay
    # speech alone: bench/robustness.py puts them through chosen conditions.
    conditions: Conditions | None = Conditions()

    def __post_init__(self) -> None:
        if self.clean:
            object.__setattr__(self, "conditions", None)
        require(self.n_sentences >= 1, "n_sentences", self.n_sentences, "1 or more")
        require(bool(self.train_voices), "train_voices", "''", "one voice or more")
        require(bool(self.test_voices), "test_voices", "''", "one voice or more")
        shared = sorted(set(self.train_voices) & set(self.test_voices))
        if shared:
            raise ValueError(f"held-out voices must not be training voices: {', '.join(shared)}")
        require(0.0 < self.heldout_fraction < 1.0, "heldout_fraction", self.heldout_fraction, "in (0, 1)")
        require(self.heldout_repeats >= 1, "heldout_repeats", self.heldout_repeats, "1 or more")
        require(0.0 <= self.dev_fraction < 1.0, "dev_fraction", self.dev_fraction, "in [0, 1)")
        require(8000 <= self.sample_rate <= 192000, "sample_rate", self.sample_rate, "8000 to 192000 Hz")


@dataclass(frozen=True)
class _Utterance:
    split: str
    uid: str
    text: str
    voice: str
    rate: int
    pitch: int
    condition: Condition | None = None


def _texts(config: SyntheticConfig) -> list[str]:
    if config.text_file is None:
        return sentences(config.n_sentences, config.seed)
    return _read_sentences(Path(config.text_file), config.n_sentences)


def _plan(texts: Sequence[str], config: SyntheticConfig) -> list[_Utterance]:
    """Who says what, how fast and how high: deterministic given the texts and the config."""
    rng = random.Random(f"harken-synthetic-plan:{config.seed}")
    recording = np.random.default_rng([config.seed, 0x5EC0])  # draws the training conditions, in order
    width = max(4, len(str(3 * len(texts))))
    counts = dict.fromkeys(_SPLITS, 0)
    plan: list[_Utterance] = []

    def add(split: str, text: str, voice: str) -> None:
        rate, pitch = rng.randint(*_RATES), rng.randint(*_PITCHES)
        counts[split] += 1
        condition = None
        if split == "train" and config.conditions is not None:
            condition = conditions.draw(config.conditions, recording)
        how = f"{text}|{voice}|{rate}|{pitch}|{config.sample_rate}"
        if condition is not None:
            how += f"|{condition.describe()}"
        digest = hashlib.sha1(how.encode()).hexdigest()
        uid = f"{_PREFIX[split]}_{counts[split]:0{width}d}_{digest[:8]}"
        plan.append(_Utterance(split, uid, text, voice, rate, pitch, condition))

    # Dev and test sentences are never heard in training, and are spoken by held-out voices only.
    order = list(range(len(texts)))
    rng.shuffle(order)
    n_held = round(config.heldout_fraction * len(texts))
    if len(texts) > 1:
        n_held = min(max(n_held, 1), len(texts) - 1)
    held, trained = set(order[:n_held]), [i for i in range(len(texts)) if i not in set(order[:n_held])]
    train = list(config.train_voices)
    for index in trained:
        for voice in rng.sample(train, min(rng.choice((2, 3)), len(train))):
            add("train", texts[index], voice)
    n_dev = round(config.dev_fraction * n_held)
    if config.dev_fraction > 0 and n_held > 1:
        n_dev = min(max(n_dev, 1), n_held - 1)
    held_out = config.test_voices
    for position, index in enumerate(i for i in order if i in held):
        for repeat in range(min(config.heldout_repeats, len(held_out))):
            voice = held_out[(position + repeat) % len(held_out)]
            add("dev" if position < n_dev else "test", texts[index], voice)
    if config.conditions is not None:  # training recordings with nobody speaking (an empty transcript)
        for _ in range(round(config.conditions.nonspeech * counts["train"])):
            add("train", "", "")
    return plan


def _record(
    path: Path, samples: np.ndarray, native_rate: int, sample_rate: int, condition: Condition | None
) -> None:
    """Resample int16 samples to ``sample_rate``, "record" them in ``condition`` (its noise seeded by the
    file's name) and write them (audio.write: 16-bit PCM, atomically)."""
    converted = audio.resample(audio.from_pcm16(samples), native_rate, sample_rate)
    if condition is not None:
        converted = conditions.apply(converted, sample_rate, condition, _generator(path))
    audio.write(path, converted, sample_rate)


def _write_nobody(path: Path, utterance: _Utterance, config: SyntheticConfig) -> None:
    """A training recording with nobody speaking, its length drawn by its name, written atomically."""
    assert utterance.condition is not None and config.conditions is not None
    rng = _generator(path)
    seconds = float(rng.uniform(*config.conditions.nonspeech_seconds))
    audio.write(
        path, conditions.nobody(seconds, config.sample_rate, utterance.condition, rng), config.sample_rate
    )


def _generator(path: Path) -> np.random.Generator:
    """The random numbers of one file's recording condition: seeded by its name (which hashes the plan)."""
    return np.random.default_rng(int(hashlib.sha1(path.stem.encode()).hexdigest()[:12], 16))


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("synthesising"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("synthesising", total=total)
        yield lambda: bar.advance(task)


def prepare(target: Path, config: SyntheticConfig = SyntheticConfig(), progress: bool = True) -> list[Path]:
    """Synthesise the corpus into ``target``; return the CSV paths ``[train, dev, test]``.

    Re-running skips every wav that already exists, so an interrupted run picks up where it stopped.
    """
    started = time.perf_counter()
    target = Path(target)
    plan = _plan(_texts(config), config)
    synthesizer = Synthesizer()
    for voice in dict.fromkeys(config.train_voices + config.test_voices):
        synthesizer.check_voice(voice)
    wav_dir = target / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    for stale in wav_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    rows: dict[str, list[manifest.Sample]] = {split: [] for split in _SPLITS}
    frames, made = 0, 0
    with _progress_bar(progress, len(plan)) as advance:
        for utterance in plan:
            path = wav_dir / f"{utterance.uid}.wav"
            if not (path.is_file() and path.stat().st_size > 0):
                if utterance.text:
                    samples, native_rate = synthesizer.speak(
                        utterance.text, utterance.voice, utterance.rate, utterance.pitch
                    )
                    _record(path, samples, native_rate, config.sample_rate, utterance.condition)
                else:
                    _write_nobody(path, utterance, config)
                made += 1
            frames += audio.info(path).frames
            rows[utterance.split].append(manifest.Sample(path, path.stat().st_size, utterance.text))
            advance()
    csvs = [target / f"{split}.csv" for split in _SPLITS]
    for split, path in zip(_SPLITS, csvs, strict=True):
        manifest.write_csv(path, rows[split])
    counts = " / ".join(f"{split} {len(rows[split])}" for split in _SPLITS)
    hours = frames / config.sample_rate / 3600
    print(
        f"synthetic corpus in {target}: {counts} utterances, {hours:.2f} h of audio; "
        f"{made} synthesised in {time.perf_counter() - started:.1f} s"
    )
    return csvs
