import struct
from pathlib import Path

import pytest

from harken.interop import scorer_package
from harken.interop.scorer_package import ScorerFormatError

from conftest import DATA

ENGLISH = " abcdefghijklmnopqrstuvwxyz'"


def _text(word: tuple[int, ...]) -> str:
    return "".join(ENGLISH[label - 1] for label in word)


def test_reads_deepspeech_pruned_lm_scorer() -> None:
    package = scorer_package.read(DATA / "pruned_lm.scorer")
    assert (package.alpha, round(package.beta, 6), package.utf8) == (0.75, 1.85, False)
    assert package.extra == b""
    assert package.lm_size == 266112  # the KenLM binary comes first
    words = {_text(word) for word in package.words}
    assert all(word.endswith(" ") for word in words)  # DeepSpeech's trie ends every word with the space
    vocabulary = set((DATA / "vocab.pruned.txt").read_text().split())
    assert {word[:-1] for word in words} == vocabulary and len(vocabulary) == 3540


def test_written_package_reads_back_with_absolute_alignment(tmp_path: Path) -> None:
    words = [(2, 1), (2, 3, 1), (3, 2, 21, 1), (21, 1)]  # "a ", "ab ", "bat ", "t "
    for lm_size in (100, 123):  # the FST arrays align to 16 bytes counted from the start of the file
        path = tmp_path / f"x{lm_size}.scorer"
        path.write_bytes(
            b"\1" * lm_size + scorer_package.package_bytes(lm_size, words, False, 0.5, 2.5, b"{}")
        )
        package = scorer_package.read(path)
        assert package.words == () and sorted(scorer_package.trie_words(path)) == sorted(words)
        assert (package.alpha, package.beta, package.extra, package.lm_size) == (0.5, 2.5, b"{}", lm_size)
        data = path.read_bytes()
        assert struct.unpack_from("<dd", data, package.alpha_offset) == (0.5, 2.5)


def test_rejects_what_is_not_a_scorer(tmp_path: Path) -> None:
    with pytest.raises(ScorerFormatError, match="LDC93S1.wav: not a scorer package"):
        scorer_package.read(DATA / "LDC93S1.wav")
    empty = tmp_path / "empty.scorer"
    empty.write_bytes(b"")
    with pytest.raises(ScorerFormatError, match="empty.scorer: not a scorer package"):
        scorer_package.read(empty)
    with pytest.raises(ScorerFormatError, match="missing.scorer: cannot read"):
        scorer_package.read(tmp_path / "missing.scorer")


def test_truncated_or_damaged_trie_is_one_line(tmp_path: Path) -> None:
    data = (DATA / "pruned_lm.scorer").read_bytes()
    truncated = tmp_path / "truncated.scorer"
    truncated.write_bytes(data[: len(data) - 5000])
    with pytest.raises(ScorerFormatError, match="truncated.scorer: damaged vocabulary trie"):
        scorer_package.read(truncated)
    no_trie = tmp_path / "lm-only.scorer"
    no_trie.write_bytes(data[:266112])
    with pytest.raises(ScorerFormatError, match="no vocabulary trie"):
        scorer_package.read(no_trie)
