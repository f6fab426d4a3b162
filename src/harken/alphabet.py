"""Alphabets: output symbols <-> label ids, in DeepSpeech's file format.

An alphabet file has one symbol per line (a line holding one space is the space symbol); lines starting
with '#' are comments and '\\#' stands for the symbol '#'. Unix, Windows and old Mac line endings all
work. The CTC blank is not in the file: it is the last class, id ``len(alphabet)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path


class AlphabetError(ValueError):
    """An alphabet file that cannot be used; the message names the file."""


class Alphabet:
    def __init__(self, symbols: Sequence[str]) -> None:
        if not symbols:
            raise AlphabetError("an alphabet needs at least one symbol")
        seen: dict[str, int] = {}
        for index, symbol in enumerate(symbols):
            if symbol in seen:
                raise AlphabetError(f"symbol {symbol!r} appears twice (labels {seen[symbol]} and {index})")
            seen[symbol] = index
        self.symbols: tuple[str, ...] = tuple(symbols)
        self._ids = seen

    @classmethod
    def from_file(cls, path: str | Path) -> Alphabet:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise AlphabetError(f"{path}: cannot read the alphabet file ({error.strerror})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise AlphabetError(f"{path}: not UTF-8 (byte {error.start})") from None
        symbols = []
        for line in re.split(r"\r\n|\r|\n", text):
            if line.startswith("\\#"):
                line = "#" + line[2:]
            elif line.startswith("#") or line == "":
                continue
            symbols.append(line)
        if not symbols:
            raise AlphabetError(f"{path}: the alphabet file has no symbols")
        try:
            return cls(symbols)
        except AlphabetError as error:
            raise AlphabetError(f"{path}: {error}") from None

    @classmethod
    def default(cls) -> Alphabet:
        """harken's English alphabet: space, a-z and the apostrophe (DeepSpeech's data/alphabet.txt)."""
        with resources.as_file(resources.files("harken") / "data" / "alphabet.txt") as path:
            return cls.from_file(path)

    @classmethod
    def load(cls, path: str | Path | None) -> Alphabet:
        return cls.from_file(path) if path else cls.default()

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alphabet) and self.symbols == other.symbols

    def __hash__(self) -> int:
        return hash(self.symbols)

    def __repr__(self) -> str:
        return f"Alphabet({''.join(self.symbols)!r})"

    @property
    def blank(self) -> int:
        """The CTC blank label: the class after the last symbol."""
        return len(self.symbols)

    @property
    def n_classes(self) -> int:
        """Output classes of a model over this alphabet: every symbol plus the blank."""
        return len(self.symbols) + 1

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in the alphabet, in order of appearance."""
        return list(dict.fromkeys(ch for ch in text if ch not in self._ids))

    def encode(self, text: str) -> list[int]:
        """Label ids of ``text``; raises ValueError naming the characters that are not in the alphabet."""
        missing = self.unknown(text)
        if missing:
            raise ValueError(f"characters not in the alphabet: {''.join(missing)!r}")
        return [self._ids[ch] for ch in text]

    def decode(self, labels: Iterable[int]) -> str:
        """Text of label ids (the blank and out-of-range ids are skipped)."""
        n = len(self.symbols)
        return "".join(self.symbols[i] for i in labels if 0 <= i < n)

    def serialize(self) -> list[str]:
        return list(self.symbols)

    def to_file_text(self) -> str:
        """The alphabet in DeepSpeech's file format."""
        lines = ["\\#" + s[1:] if s.startswith("#") else s for s in self.symbols]
        return "# harken alphabet: one symbol per line\n" + "".join(line + "\n" for line in lines)


def from_transcripts(transcripts: Iterable[str]) -> tuple[Alphabet, dict[str, int]]:
    """The alphabet that spells every transcript (the space first, then by code point) and how often each
    symbol occurs (DeepSpeech's check_characters.py, as an alphabet file)."""
    counts: dict[str, int] = {}
    for text in transcripts:
        for char in text:
            counts[char] = counts.get(char, 0) + 1
    for char in [c for c in counts if c in "\r\n\t" or (c.isspace() and c != " ")]:
        del counts[char]  # line breaks and tabs are not symbols of a transcript
    if not counts:
        raise AlphabetError("the transcripts have no characters")
    symbols = sorted(counts, key=lambda c: (c != " ", ord(c)))
    return Alphabet(symbols), counts
