"""Alphabets: output symbols <-> label ids, in DeepSpeech's file format.

An alphabet file has one symbol per line (a line holding one space is the space symbol); lines starting
with '#' are comments and '\\#' stands for the symbol '#'. Unix, Windows and old Mac line endings all
work. The CTC blank is not in the file: it is the last class, id ``len(alphabet)``.

In UTF-8 byte mode (``--bytes_output_mode``, DeepSpeech's way to model any script, e.g. Mandarin) the
labels are the bytes 1-255 of the transcript's UTF-8 encoding (label = byte - 1) and the blank is 255.
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

    @classmethod
    def from_serialized(cls, symbols: Sequence[str]) -> Alphabet:
        """What ``serialize`` wrote (checkpoints, exported models): an alphabet or the byte mode."""
        if list(symbols) == [BYTES_MARKER]:
            return ByteAlphabet()
        return cls(symbols)

    @classmethod
    def for_model(cls, path: str | Path | None, bytes_output_mode: bool) -> Alphabet:
        """The output alphabet options describe: UTF-8 bytes, an alphabet file, or English."""
        return ByteAlphabet() if bytes_output_mode else cls.load(path)

    def tokens(self, labels: Sequence[int]) -> list[tuple[str, int]]:
        """(text, position in ``labels``) of each output token: one per label here (a byte alphabet
        groups the bytes of one character)."""
        n = len(self.symbols)
        return [(self.symbols[label], i) for i, label in enumerate(labels) if 0 <= label < n]

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


BYTES_MARKER = "\x00utf-8 bytes"


class ByteAlphabet(Alphabet):
    """UTF-8 byte mode: 255 labels (bytes 1-255) and the blank; any text but NUL can be spelled."""

    def __init__(self) -> None:
        super().__init__([chr(byte) for byte in range(1, 256)])

    def __repr__(self) -> str:
        return "ByteAlphabet()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteAlphabet)

    def __hash__(self) -> int:
        return hash(BYTES_MARKER)

    def unknown(self, text: str) -> list[str]:
        return ["\x00"] if "\x00" in text else []

    def encode(self, text: str) -> list[int]:
        if "\x00" in text:
            raise ValueError("a NUL character cannot be spelled in UTF-8 byte mode")
        return [byte - 1 for byte in text.encode("utf-8")]

    def decode(self, labels: Iterable[int]) -> str:
        """Text of byte labels; bytes that make no character (a cut-off sequence) are dropped."""
        return bytes(label + 1 for label in labels if 0 <= label < 255).decode("utf-8", "ignore")

    def serialize(self) -> list[str]:
        return [BYTES_MARKER]

    def to_file_text(self) -> str:
        raise AlphabetError("UTF-8 byte mode has no alphabet file")

    def tokens(self, labels: Sequence[int]) -> list[tuple[str, int]]:
        """One token per character: its bytes joined, at the position of its first byte."""
        out: list[tuple[str, int]] = []
        pending: list[int] = []
        start = 0
        for position, label in enumerate(labels):
            if not 0 <= label < 255:
                continue
            byte = label + 1
            if not pending or byte & 0xC0 != 0x80:  # not a continuation byte: a new character starts
                out.extend(self._character(pending, start))
                pending, start = [], position
            pending.append(byte)
        out.extend(self._character(pending, start))
        return out

    @staticmethod
    def _character(pending: list[int], start: int) -> list[tuple[str, int]]:
        """The character these bytes make, or nothing (as ``decode`` drops bytes that make none)."""
        text = bytes(pending).decode("utf-8", "ignore")
        return [(text, start)] if text else []
