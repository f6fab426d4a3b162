"""DeepSpeech / Coqui STT ``.scorer`` packages: read them, and write harken's scorers in the same layout.

A DeepSpeech scorer is one file: a KenLM binary model, then (from the offset where KenLM's search data
ends) a small header — int32 magic ``'TRIE'`` (bytes ``EIRT``), int32 version 6, one byte ``is_utf8``,
float64 default alpha, float64 default beta — then the vocabulary as an OpenFST ``ConstFst`` acceptor
(standard arcs, aligned): every word is a path of labels ``alphabet index + 1`` (0 is epsilon), ended
by the space label in character mode. In UTF-8 mode (byte-output models) the LM's words are single
characters, spelled by their UTF-8 byte values with no space (DeepSpeech's UTF8Alphabet gives byte ``b``
the label ``b - 1``, which its trie stores + 1).

harken writes the same layout (read back by harken's reader; DeepSpeech's own reader, which needs Python
<= 3.9, was not run against it), followed by a JSON block
with what DeepSpeech never stored — the alphabet, the vocabulary as text, the n-gram order, how it was
built — and a 16-byte tail: uint64 length of the JSON, then the magic ``HARKENLM``.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRIE_MAGIC = b"EIRT"  # int32 0x54524945 ('TRIE') little-endian
TRIE_VERSION = 6
FST_MAGIC = 2125659606
HARKEN_MAGIC = b"HARKENLM"
_ALIGN = 16
_HEADER = struct.Struct("<4sib dd")  # magic, version, is_utf8, alpha, beta
_FST_COUNTS = struct.Struct("<iiQqqq")  # version, flags, properties, start, n_states, n_arcs
_STATE = np.dtype([("final", "<f4"), ("pos", "<u4"), ("n_arcs", "<u4"), ("n_ieps", "<u4"), ("n_oeps", "<u4")])
_ARC = np.dtype([("ilabel", "<i4"), ("olabel", "<i4"), ("weight", "<f4"), ("next", "<i4")])
_ALIGNED = 4  # FstHeader flag: arrays aligned to 16 bytes
# Properties of a trie acceptor, as DeepSpeech's own scorers declare them: expanded, acceptor,
# (i/o) deterministic, no epsilons, (i/o) label sorted, unweighted, acyclic, accessible, coaccessible.
_TRIE_PROPERTIES = 0xA5AA5A950001


class ScorerFormatError(ValueError):
    """A file that is not a scorer package, or a damaged one; one line that names the file."""


@dataclass(frozen=True)
class Package:
    lm_size: int  # bytes of the KenLM model at the start of the file
    utf8: bool
    alpha: float
    beta: float
    words: tuple[tuple[int, ...], ...]  # a DeepSpeech scorer's words as trie labels (alphabet index or byte)
    alpha_offset: int  # where the float64 alpha is in the file (beta follows): tuning rewrites them
    extra: bytes  # harken's JSON block, b"" in a DeepSpeech scorer


def _find_header(data: mmap.mmap | bytes, path: Path) -> int:
    """The trie header's offset: the first ``EIRT`` + version 6 that is followed by an FST header."""
    start = 0
    while True:
        found = data.find(TRIE_MAGIC + struct.pack("<i", TRIE_VERSION), start)
        if found < 0:
            raise ScorerFormatError(
                f"{path}: not a scorer package (no vocabulary trie after the language model); "
                "build one with `harken lm build`"
            )
        fst = found + _HEADER.size
        if data[fst : fst + 4] == struct.pack("<I", FST_MAGIC):
            return found
        start = found + 1


def _read_string(data: mmap.mmap | bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<i", data, offset)
    if not 0 <= length < 64:
        raise ValueError("bad string length")
    return bytes(data[offset + 4 : offset + 4 + length]).decode("ascii"), offset + 4 + length


def _words(states: np.ndarray, arcs: np.ndarray, start: int) -> list[tuple[int, ...]]:
    """Every path from ``start`` to a final state (the FST is acyclic), depth first, in label order."""
    final = np.isfinite(states["final"]).tolist()
    position, count = states["pos"].tolist(), states["n_arcs"].tolist()
    labels, targets = arcs["ilabel"].tolist(), arcs["next"].tolist()
    words: list[tuple[int, ...]] = []
    stack: list[tuple[int, tuple[int, ...]]] = [(start, ())]
    while stack:
        state, prefix = stack.pop()
        if final[state]:
            words.append(prefix)
        first = position[state]
        for arc in range(first + count[state] - 1, first - 1, -1):
            stack.append((targets[arc], (*prefix, labels[arc])))
    return words


def _read_fst(data: mmap.mmap | bytes, offset: int) -> tuple[list[tuple[int, ...]], int]:
    """A ConstFst<StdArc> at ``offset`` -> (its accepted label strings, the offset after it)."""
    (magic,) = struct.unpack_from("<I", data, offset)
    if magic != FST_MAGIC:
        raise ValueError("no FST header")
    fst_type, offset = _read_string(data, offset + 4)
    arc_type, offset = _read_string(data, offset)
    if (fst_type, arc_type) != ("const", "standard"):
        raise ValueError(f"FST of type {fst_type}/{arc_type}, expected const/standard")
    _, flags, _, start, n_states, n_arcs = _FST_COUNTS.unpack_from(data, offset)
    offset += _FST_COUNTS.size
    if flags & _ALIGNED:
        offset += -offset % _ALIGN
    states = np.frombuffer(data, _STATE, n_states, offset).copy()  # no view may outlive the mmap
    offset += n_states * _STATE.itemsize
    if flags & _ALIGNED:
        offset += -offset % _ALIGN
    arcs = np.frombuffer(data, _ARC, n_arcs, offset).copy()
    offset += n_arcs * _ARC.itemsize
    if n_arcs and (arcs["next"].max() >= n_states or arcs["next"].min() < 0):
        raise ValueError("arc to a state that does not exist")
    return (_words(states, arcs, start) if n_states else []), offset


def read(path: Path) -> Package:
    """Read a DeepSpeech or harken ``.scorer``'s package part (the KenLM model is left to KenLM). A harken
    scorer's vocabulary is in its JSON block, so its trie is not walked (``words`` is empty)."""
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            header = _find_header(data, path)
            _, _, utf8, alpha, beta = _HEADER.unpack_from(data, header)
            words: list[tuple[int, ...]] = []
            extra = b""
            if data[-len(HARKEN_MAGIC) :] == HARKEN_MAGIC:
                (length,) = struct.unpack_from("<Q", data, len(data) - 16)
                if not header + _HEADER.size < len(data) - 16 - length:
                    raise ScorerFormatError(f"{path}: damaged harken metadata block")
                extra = bytes(data[len(data) - 16 - length : len(data) - 16])
            else:
                try:
                    words, _ = _read_fst(data, header + _HEADER.size)
                except (ValueError, struct.error) as error:
                    raise ScorerFormatError(f"{path}: damaged vocabulary trie ({error})") from None
    except ValueError as error:
        if isinstance(error, ScorerFormatError):
            raise
        raise ScorerFormatError(f"{path}: not a scorer package (empty file)") from None
    except OSError as error:
        raise ScorerFormatError(f"{path}: cannot read scorer ({error.strerror or error})") from None
    if header < 64:
        raise ScorerFormatError(f"{path}: the scorer holds no language model before its vocabulary")
    return Package(header, bool(utf8), alpha, beta, tuple(words), header + 9, extra)


def trie_words(path: Path) -> list[tuple[int, ...]]:
    """The label strings of a scorer's vocabulary trie (DeepSpeech or harken)."""
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _read_fst(data, _find_header(data, path) + _HEADER.size)[0]


def _trie_arrays(words: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic trie acceptor of ``words``: states in depth-first order, arcs sorted by label."""
    children: list[dict[int, int]] = [{}]
    final = [False]
    for word in words:
        node = 0
        for label in word:
            child = children[node].get(label)
            if child is None:
                child = len(children)
                children[node][label] = child
                children.append({})
                final.append(False)
            node = child
        final[node] = True
    # Renumber depth first so every arc goes forward (topologically sorted, as a minimised trie is).
    order: list[int] = []
    stack = [0]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(child for _, child in sorted(children[node].items(), reverse=True))
    number = {node: index for index, node in enumerate(order)}
    states = np.zeros(len(order), _STATE)
    arcs = np.zeros(sum(len(c) for c in children), _ARC)
    position = 0
    for index, node in enumerate(order):
        out = sorted(children[node].items())
        states[index] = (0.0 if final[node] else np.inf, position, len(out), 0, 0)
        for label, child in out:
            arcs[position] = (label, label, 0.0, number[child])
            position += 1
    return states, arcs


def _aligned(buffer: bytearray, base: int) -> None:
    buffer.extend(b"\0" * (-(base + len(buffer)) % _ALIGN))


def package_bytes(
    lm_size: int, words: Iterable[Sequence[int]], utf8: bool, alpha: float, beta: float, extra: bytes
) -> bytes:
    """What follows a KenLM model of ``lm_size`` bytes to make it a scorer (alignment is absolute, as
    DeepSpeech reads the trie from the same stream as the model)."""
    states, arcs = _trie_arrays(words)
    out = bytearray(_HEADER.pack(TRIE_MAGIC, TRIE_VERSION, int(utf8), alpha, beta))
    out += struct.pack("<I", FST_MAGIC)
    for name in (b"const", b"standard"):
        out += struct.pack("<i", len(name)) + name
    out += _FST_COUNTS.pack(1, _ALIGNED, _TRIE_PROPERTIES, 0, len(states), len(arcs))
    _aligned(out, lm_size)
    out += states.tobytes()
    _aligned(out, lm_size)
    out += arcs.tobytes()
    if extra:
        out += extra + struct.pack("<Q", len(extra)) + HARKEN_MAGIC
    return bytes(out)
