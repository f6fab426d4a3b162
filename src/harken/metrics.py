"""Word and character error rates (jiwer's edit distances)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jiwer


@dataclass(frozen=True)
class Errors:
    """Edit operations against a reference, and the reference's length (words or characters)."""

    edits: int
    length: int

    @property
    def rate(self) -> float:
        """edits / length; a hypothesis against an empty reference counts 1.0 if it says anything."""
        if self.length == 0:
            return 0.0 if self.edits == 0 else 1.0
        return self.edits / self.length

    def __add__(self, other: Errors) -> Errors:
        return Errors(self.edits + other.edits, self.length + other.length)


def _edits(reference: list[str], hypothesis: list[str]) -> int:
    if not reference:
        return len(hypothesis)
    if not hypothesis:
        return len(reference)
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return int(out.substitutions + out.deletions + out.insertions)


def word_errors(reference: str, hypothesis: str) -> Errors:
    ref, hyp = reference.split(), hypothesis.split()
    return Errors(_edits(ref, hyp), len(ref))


def char_errors(reference: str, hypothesis: str) -> Errors:
    """Character edits, spaces included, on whitespace-normalised text."""
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    if not ref or not hyp:
        return Errors(max(len(ref), len(hyp)), len(ref))
    out = jiwer.process_characters(ref, hyp)
    return Errors(int(out.substitutions + out.deletions + out.insertions), len(ref))


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: all word edits over all reference words."""
    total = Errors(0, 0)
    for ref, hyp in zip(references, hypotheses, strict=True):
        total = total + word_errors(ref, hyp)
    return total.rate


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus CER: all character edits over all reference characters."""
    total = Errors(0, 0)
    for ref, hyp in zip(references, hypotheses, strict=True):
        total = total + char_errors(ref, hyp)
    return total.rate
