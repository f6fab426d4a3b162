"""What ``harken adapt`` reads before it does anything: the domain text (can the model spell it?), the
recordings (which are dev data, how much audio is left to train on) and the scorer size the text calls for.

Every refusal here is an ``AdaptError``: one line naming the flag and the file, raised before a file is
written, so a refused command loses nothing.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harken import audio, manifest
from harken.alphabet import Alphabet
from harken.language_model import words_of
from harken.manifest import Sample
from harken.storage import atomic_write

SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id")  # a CSV column naming who speaks, if any
MAX_UNSPELLABLE = (
    0.05  # share of the text's running words the alphabet cannot spell above which it is refused
)

# The scorer's n-gram order and lmplz pruning by the text's running words (docs/design.md, "harken adapt"):
# (fewer than this many words, order, minimum count per order).
SCORER_SIZES: tuple[tuple[float, int, tuple[int, ...]], ...] = (
    (100_000, 3, (0,)),
    (10_000_000, 4, (0, 0, 1)),
    (float("inf"), 5, (0, 0, 1)),
)


class AdaptError(ValueError):
    """What ``harken adapt`` refuses to do; one line, naming the flag or file."""


@dataclass(frozen=True)
class DomainText:
    path: Path
    sentences: int
    running_words: int
    distinct_words: int
    unspellable_words: int  # running words with a character the model's alphabet lacks (left out of the LM)


def read_text(path: Path, alphabet: Alphabet) -> DomainText:
    """Count the domain text's words (``words_of``: case and punctuation as the scorer gets them); refuse
    an empty text or one mostly in another alphabet."""
    lowercase = not any(symbol != symbol.lower() for symbol in alphabet.symbols)
    try:
        lines = [words_of(line, alphabet, lowercase) for line in text_lines(path)]
    except FileNotFoundError:
        raise AdaptError(f"--text {path}: no such file") from None
    except IsADirectoryError:
        raise AdaptError(f"--text {path}: a folder, not a text file") from None
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
        raise AdaptError(f"--text {path}: not UTF-8 text ({type(error).__name__})") from None
    counts = Counter(word for line in lines for word in line)
    running = sum(counts.values())
    if running == 0:
        raise AdaptError(f"--text {path}: the text has no words (one sentence a line is expected)")
    bad: Counter[str] = Counter()
    for word, count in counts.items():
        missing = alphabet.unknown(word)
        if missing:
            bad[missing[0]] += count
    share = sum(bad.values()) / running
    if share > MAX_UNSPELLABLE:
        shown = ", ".join(repr(char) for char, _ in bad.most_common(5))
        raise AdaptError(
            f"--text {path}: {share:.0%} of its words have characters the model's alphabet lacks ({shown}): "
            "a text in another alphabet or script cannot adapt this model"
        )
    sentences = sum(1 for line in lines if line)
    return DomainText(path, sentences, running, len(counts), sum(bad.values()))


def text_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return list(handle)


def write_words(source: Path, alphabet: Alphabet, target: Path) -> None:
    """``source`` as the scorer reads it (``words_of``), one sentence a line, to ``target``."""
    lowercase = not any(symbol != symbol.lower() for symbol in alphabet.symbols)
    lines = (words_of(line, alphabet, lowercase) for line in text_lines(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, "w", encoding="utf-8") as handle:
        handle.writelines(" ".join(words) + "\n" for words in lines if words)


def scorer_size(running_words: int) -> tuple[int, tuple[int, ...]]:
    """The n-gram order and pruning (lmplz --prune) for a text of ``running_words`` words."""
    for below, order, prune in SCORER_SIZES:
        if running_words < below:
            return order, prune
    raise AssertionError("the last size has no bound")


def base_file(checkpoint_dir: Path | None, model: Path | None) -> Path:
    """The file the base model is loaded from: --model, or the checkpoint ``transcribe`` loads from
    --checkpoint_dir (the best on dev, else the last)."""
    from harken import checkpoint

    if model is not None:
        return model
    assert checkpoint_dir is not None
    for kind in checkpoint.kinds_for("auto", training=False):
        found = checkpoint.listing(checkpoint_dir, kind)
        if found:
            return found[-1]
    raise AdaptError(f"--checkpoint_dir {checkpoint_dir}: no checkpoint found")


def base_digest(checkpoint_dir: Path | None, model: Path | None) -> str:
    """What identifies the base model: the name and contents of the file it is loaded from."""
    loaded = base_file(checkpoint_dir, model)
    return f"{loaded.name}:{digest(loaded)}"


def digest(path: Path) -> str:
    """The SHA-1 of a file's bytes (what identifies an input between runs)."""
    sha = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


# --- recordings ----------------------------------------------------------------------------------------


def read_recordings(path: Path, flag: str) -> tuple[list[Sample], list[str] | None]:
    """A CSV manifest's samples and, when it has a speaker column (speaker, speaker_id, client_id), who
    speaks in each; AdaptError naming ``flag`` when it cannot be read, lists nothing, or a recording is
    missing or its audio header cannot be read."""
    try:
        samples = manifest.read_csv(path)
    except manifest.ManifestError as error:
        raise AdaptError(f"--{flag} {error}") from None
    if not samples:
        raise AdaptError(f"--{flag} {path}: lists no recordings")
    missing = [sample.path for sample in samples if not sample.path.is_file()]
    if missing:
        raise AdaptError(f"--{flag} {path}: {len(missing)} recordings are missing, e.g. {missing[0]}")
    for sample in samples:
        try:
            audio.info(sample.path)
        except (audio.AudioError, OSError, RuntimeError, ValueError) as error:
            raise AdaptError(f"--{flag} {path}: {sample.path} is not readable audio ({error})") from None
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    header = [name.strip() for name in rows[0]]
    column = next((header.index(name) for name in SPEAKER_COLUMNS if name in header), None)
    if column is None:
        return samples, None
    return samples, [row[column].strip() for row in rows[1:]]


@dataclass(frozen=True)
class DevSplit:
    train: list[Sample]
    dev: list[Sample]
    how: str  # how dev was chosen, for the report


def split_dev(
    samples: Sequence[Sample],
    speakers: Sequence[str] | None,
    fraction: float,
    minimum: int,
    seed: int,
) -> DevSplit:
    """Hold out at least ``minimum`` and about ``fraction`` of the samples as dev data: whole speakers
    (drawn with ``seed``) when ``speakers`` names them, so that dev measures voices training never heard;
    else rows drawn with ``seed``. Too few samples to leave any for training: every one is dev data."""
    wanted = max(minimum, round(fraction * len(samples)))
    if len(samples) <= wanted:
        return DevSplit([], list(samples), f"all {len(samples)} recordings (too few to split)")
    rng = random.Random(seed)
    if speakers is not None and len(set(speakers)) > 1:
        chosen = _dev_speakers(speakers, wanted, minimum, rng)
        if chosen:
            dev = [s for s, who in zip(samples, speakers, strict=True) if who in chosen]
            train = [s for s, who in zip(samples, speakers, strict=True) if who not in chosen]
            how = f"{len(chosen)} of {len(set(speakers))} speakers (seed {seed})"
            return DevSplit(train, dev, how)
    picked = set(rng.sample(range(len(samples)), wanted))
    dev = [s for i, s in enumerate(samples) if i in picked]
    train = [s for i, s in enumerate(samples) if i not in picked]
    why = "no speaker column" if speakers is None or len(set(speakers)) < 2 else "speakers too unbalanced"
    return DevSplit(train, dev, f"{wanted} of {len(samples)} rows ({why}; seed {seed})")


def _dev_speakers(speakers: Sequence[str], wanted: int, minimum: int, rng: random.Random) -> set[str]:
    """Whole speakers holding close to ``wanted`` clips: in an order drawn by ``rng``, each speaker that
    still fits; then, when short, the smallest speaker left if that comes closer (it overshoots by less
    than its own size, and never takes more than twice the target). At least one speaker stays for
    training. Empty when no choice holds ``minimum`` clips (the caller splits by rows)."""
    sizes = Counter(speakers)
    order = sorted(sizes)
    rng.shuffle(order)
    chosen: set[str] = set()
    count = 0
    for speaker in order:
        if count + sizes[speaker] <= wanted and len(chosen) < len(order) - 1:
            chosen.add(speaker)
            count += sizes[speaker]
    left = sorted((s for s in order if s not in chosen), key=sizes.__getitem__)  # ties: drawn order
    if count < wanted and len(left) > 1:
        speaker, size = left[0], sizes[left[0]]
        over = count + size - wanted
        if (over < wanted - count or count < minimum) and count + size <= 2 * wanted:
            chosen.add(speaker)
            count += size
    return chosen if count >= minimum else set()


def overlap(first: Sequence[Sample], second: Sequence[Sample]) -> list[Path]:
    """The recordings (their resolved paths) that both lists hold, in ``first``'s order."""
    held = {sample.path.resolve() for sample in second}
    return [sample.path for sample in first if sample.path.resolve() in held]


def seconds(samples: Sequence[Sample]) -> float:
    """The recordings' total duration, from their headers."""
    return sum(audio.info(sample.path).duration for sample in samples)
