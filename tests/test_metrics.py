from __future__ import annotations

import pytest

from harken import metrics
from harken.metrics import Errors


def levenshtein(a: list[str] | str, b: list[str] | str) -> int:
    """Reference edit distance (substitutions, deletions and insertions all cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


@pytest.mark.parametrize(
    ("reference", "hypothesis", "edits", "words"),
    [
        ("the cat sat on the mat", "the cat sat on the mat", 0, 6),
        ("the cat sat on the mat", "the cat sit on mat", 2, 6),  # one substitution, one deletion
        ("the cat sat", "the cat sat down", 1, 3),  # one insertion
        ("a b c", "x b", 2, 3),  # a -> x, c deleted
        ("she had your dark suit", "he had you dark suit in", 3, 5),
        ("one two three", "three two one", 2, 3),
        ("hello", "", 1, 1),
        ("  spaced   out  ", "spaced out", 0, 2),
    ],
)
def test_word_errors(reference: str, hypothesis: str, edits: int, words: int) -> None:
    errors = metrics.word_errors(reference, hypothesis)
    assert errors == Errors(edits, words)
    assert edits == levenshtein(reference.split(), hypothesis.split())
    assert errors.rate == pytest.approx(edits / words)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "edits", "chars"),
    [
        ("kitten", "sitting", 3, 6),
        ("abc", "abc", 0, 3),
        ("ab cd", "abcd", 1, 5),  # the space counts
        ("abcd", "ab cd", 1, 4),
        ("she had", "he hat", 2, 7),
        ("abc", "", 3, 3),
        ("flaw", "lawn", 2, 4),
    ],
)
def test_char_errors(reference: str, hypothesis: str, edits: int, chars: int) -> None:
    errors = metrics.char_errors(reference, hypothesis)
    assert errors == Errors(edits, chars)
    assert edits == levenshtein(" ".join(reference.split()), " ".join(hypothesis.split()))
    assert errors.rate == pytest.approx(edits / chars)


def test_char_errors_normalise_whitespace() -> None:
    assert metrics.char_errors("  she \t had  your\n", "she had your") == Errors(0, 12)
    assert metrics.char_errors("she had", "  she    had ") == Errors(0, 7)
    assert metrics.char_errors("she  had", "shehad") == Errors(1, 7)  # one space, not two
    assert metrics.cer(["a  b"], ["a b"]) == 0.0


def test_empty_reference() -> None:
    assert metrics.word_errors("", "") == Errors(0, 0)
    assert metrics.word_errors("", "").rate == 0.0
    assert metrics.word_errors("   ", "two words") == Errors(2, 0)
    assert metrics.word_errors("", "two words").rate == 1.0  # saying anything against silence is all wrong
    assert metrics.char_errors("", "ab") == Errors(2, 0)
    assert metrics.char_errors("", "ab").rate == 1.0
    assert metrics.char_errors(" ", "") == Errors(0, 0)
    assert metrics.char_errors("", "").rate == 0.0
    assert metrics.wer([], []) == 0.0
    assert metrics.cer([], []) == 0.0
    # An empty reference adds its insertions but no words to a corpus.
    assert metrics.wer(["a b", ""], ["a b", "x"]) == pytest.approx(1 / 2)


def test_corpus_wer_is_total_edits_over_total_words() -> None:
    references = ["a", "the quick brown fox jumps over the lazy dog"]
    hypotheses = ["b", "the quick brown fox jumps over the lazy dog"]
    # 1 edit over 10 words, not the mean of the rates (1.0 and 0.0 -> 0.5).
    assert metrics.wer(references, hypotheses) == pytest.approx(1 / 10)
    rates = [metrics.word_errors(r, h).rate for r, h in zip(references, hypotheses, strict=True)]
    assert sum(rates) / len(rates) == pytest.approx(0.5)
    assert metrics.wer(["a b c d", "e f"], ["a x c", "e f g h"]) == pytest.approx((2 + 2) / 6)


def test_corpus_cer_is_total_edits_over_total_chars() -> None:
    assert metrics.cer(["ab", "abcdefgh"], ["xb", "abcdefgh"]) == pytest.approx(1 / 10)
    assert metrics.cer(["kitten", "flaw"], ["sitting", "lawn"]) == pytest.approx(5 / 10)


def test_corpus_metrics_need_matching_lengths() -> None:
    with pytest.raises(ValueError):
        metrics.wer(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        metrics.cer(["a"], ["a", "b"])


def test_errors_add_and_rate() -> None:
    assert Errors(1, 4) + Errors(2, 6) == Errors(3, 10)
    assert (Errors(1, 4) + Errors(2, 6)).rate == pytest.approx(0.3)
    assert Errors(5, 2).rate == pytest.approx(2.5)  # more edits than words: above 1
    assert Errors(0, 0).rate == 0.0
    assert Errors(3, 0).rate == 1.0
