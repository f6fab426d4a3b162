"""CTC decoding: log-probabilities -> text (greedy here; beam search with a scorer comes with #3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harken.alphabet import Alphabet


@dataclass(frozen=True)
class Decoded:
    text: str
    labels: tuple[int, ...]  # the emitted labels (a label's symbol may be more than one character)
    timesteps: tuple[int, ...]  # frame index at which each label was emitted
    confidence: float  # sum of the chosen frames' log-probabilities


class GreedyDecoder:
    """Best-path decoding that goes on where it stopped: feed frames as they come (a stream), read the
    result at any time. Each frame is looked at once, so decoding a long stream costs what its frames do."""

    def __init__(self, alphabet: Alphabet) -> None:
        self.alphabet = alphabet
        self.labels: list[int] = []
        self.steps: list[int] = []
        self.confidence = 0.0
        self.frames = 0
        self._previous = -1

    def extend(self, log_probs: torch.Tensor) -> None:
        """log_probs: [time, n_classes], the frames that follow those already seen."""
        best, ids = log_probs.max(dim=-1)  # [time], [time]
        for offset, label in enumerate(ids.tolist()):
            if label != self._previous and label != self.alphabet.blank:
                self.labels.append(label)
                self.steps.append(self.frames + offset)
            self._previous = label
        self.frames += len(ids)
        self.confidence += float(best.sum())

    def result(self) -> Decoded:
        return Decoded(
            self.alphabet.decode(self.labels), tuple(self.labels), tuple(self.steps), self.confidence
        )


def greedy(log_probs: torch.Tensor, length: int, alphabet: Alphabet) -> Decoded:
    """Best path: the likeliest class at every frame, repeats merged, blanks dropped.

    log_probs: [time, n_classes] for one utterance; only the first ``length`` frames are read.
    """
    state = GreedyDecoder(alphabet)
    state.extend(log_probs[:length])
    return state.result()


def greedy_batch(log_probs: torch.Tensor, lengths: torch.Tensor, alphabet: Alphabet) -> list[Decoded]:
    """log_probs: [batch, time, n_classes], lengths: [batch] -> one Decoded per row."""
    cpu = log_probs.detach().float().cpu()
    return [greedy(cpu[row], int(lengths[row]), alphabet) for row in range(cpu.shape[0])]
