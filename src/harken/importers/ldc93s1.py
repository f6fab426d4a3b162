"""LDC93S1, the TIMIT sample sentence: DeepSpeech's smoke-test corpus, as its import_ldc93s1.py made it.

SOURCE is a folder holding ``LDC93S1.wav`` and ``LDC93S1.txt`` (``0 46797 She had your dark suit in
greasy wash water all year.``: the first two numbers are sample offsets). The result is
``TARGET/ldc93s1.csv`` with the transcript lowercased and without punctuation. The wav is used where it
is when it already is mono 16-bit PCM at ``sample_rate`` (as DeepSpeech did), else converted to
``TARGET/LDC93S1.wav``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harken.importers.corpus import ImportConfig, Utterance, check_source, check_target, read_text, run

__all__ = ["LDC93S1Config", "prepare", "read_transcript"]

_EXPECTED = "a folder holding LDC93S1.wav and LDC93S1.txt"


@dataclass(frozen=True)
class LDC93S1Config(ImportConfig):
    """No options beyond the common ones."""


def read_transcript(path: Path) -> str:
    """The text of a TIMIT-style transcript file, without its leading sample offsets."""
    tokens = read_text(path).split()
    if len(tokens) >= 2 and tokens[0].isdigit() and tokens[1].isdigit():
        tokens = tokens[2:]
    return " ".join(tokens)


def prepare(
    source: Path, target: Path, config: LDC93S1Config = LDC93S1Config(), progress: bool = True
) -> list[Path]:
    """Import ``source`` into ``target``; return ``[target/ldc93s1.csv]``."""
    source, target = check_source(Path(source), _EXPECTED), check_target(Path(target))
    text = source / "LDC93S1.txt"
    if not text.is_file():
        raise ValueError(f"{text}: no such file (expected {_EXPECTED})")
    wav = source / "LDC93S1.wav"
    utterance = Utterance("ldc93s1.csv", wav, target / "LDC93S1.wav", read_transcript(text), as_is=True)
    return run("ldc93s1", [utterance], target, ["ldc93s1.csv"], config, progress)
