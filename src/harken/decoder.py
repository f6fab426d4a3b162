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


def greedy(log_probs: torch.Tensor, length: int, alphabet: Alphabet) -> Decoded:
    """Best path: the likeliest class at every frame, repeats merged, blanks dropped.

    log_probs: [time, n_classes] for one utterance; only the first ``length`` frames are read.
    """
    frames = log_probs[:length]
    best, ids = frames.max(dim=-1)  # [time], [time]
    labels, steps = [], []
    previous = -1
    for frame, label in enumerate(ids.tolist()):
        if label != previous and label != alphabet.blank:
            labels.append(label)
            steps.append(frame)
        previous = label
    return Decoded(alphabet.decode(labels), tuple(labels), tuple(steps), float(best.sum()))


def greedy_batch(log_probs: torch.Tensor, lengths: torch.Tensor, alphabet: Alphabet) -> list[Decoded]:
    """log_probs: [batch, time, n_classes], lengths: [batch] -> one Decoded per row."""
    cpu = log_probs.detach().float().cpu()
    return [greedy(cpu[row], int(lengths[row]), alphabet) for row in range(cpu.shape[0])]
