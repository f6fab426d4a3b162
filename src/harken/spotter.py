"""Hot phrases without a scorer: a CTC phrase spotter beside the beam search.

The search without a scorer has no language model, so each frame's labels are judged on the acoustics
alone and a hot phrase's boost is all that can change its mind. The spotter asks that question directly,
for every phrase at once: over some stretch of frames, does spelling the phrase there (a word of its own:
a space before and after it, unless it starts or ends the utterance) score within its boost of the best
path? Where it does, the phrase replaces what the search wrote over those frames. Only whole phrases are
ever written, so a partial match earns nothing.

Scores are relative to the best path: ``rel[t, k] = log p(k | t) - max_j log p(j | t) <= 0``, so the best
path scores 0 over any stretch, and a phrase spelled from frame s to frame e scores ``r <= 0`` (its best
CTC alignment there, found by a Viterbi pass over all phrases' label chains side by side). A phrase is
written where ``r + boost >= 0`` (its boost: per word, natural log, times its words), the most gain first,
never two over the same frames. The pass is causal and goes frame by frame, so a stream spots exactly what
the whole file does, and the cost is a few vector operations per frame whatever the number of phrases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NEVER = -1e30  # a state no path reaches
# A path's score and the frame it entered its chain share one float64: the score on a grid of 2**-12 (the
# relative log-probs are rounded to it) and the start frame in the bits below, start * 2**-32 (frames <
# 2**20, scores > -2**20). Sums of such numbers are exact, so the start rides along with the score through
# every max and add, and of two equal scores the later start (the shorter span) wins.
GRID = 2.0**12
START = 2.0**-32
BLOCK = 16  # frames gathered at a time (a whole file's at once would not stay in the cache)
MAX_FRAMES = 2**20  # about 5.8 hours at 20 ms a frame: an utterance is far shorter


@dataclass(frozen=True)
class Spotted:
    phrase: int  # index into the spotter's phrases
    first: int  # first frame it spans (its leading space, or 0)
    last: int  # last frame it spans
    score: float  # its best alignment's score over those frames relative to the best path's (<= 0)
    gain: float  # score plus its boost (>= 0)


def _unpacked(value: float) -> tuple[float, int]:
    """(score, start frame) of a packed path value."""
    steps = np.floor(value * GRID)
    return float(steps / GRID), int(round((value - steps / GRID) / START))


class PhraseChains:
    """Every phrase's CTC label chain, one per row of width W, right-aligned (the trailing space in the
    last column) after at least one column of padding: [pad..., space, blank, c1, blank, c2, ..., blank,
    cn, blank, space]. The rows are laid end to end in one vector (contiguous arrays are several times
    faster to step than strided ones); the padding column that starts each row is a wall between rows."""

    def __init__(self, phrases: Sequence[Sequence[int]], boosts: Sequence[float], space: int, blank: int):
        chains: list[list[int]] = []
        for labels in phrases:
            chain = [space]
            for label in labels:
                chain += [blank, label]
            chains.append(chain + [blank, space])
        width = 1 + max((len(chain) for chain in chains), default=3)
        self.boosts = np.asarray(boosts, np.float64)  # [P] whole-phrase boosts
        grid = np.full((len(chains), width), blank, np.int64)  # [P, W]
        # Moves into a state: from the one before it always (the padding is never reached); from two
        # before over an optional blank (a label that differs from the label two back): 0 where allowed,
        # NEVER where not.
        from_two = np.full((len(chains), width), NEVER)
        first = np.zeros(len(chains), np.int64)  # [P] each chain's leading space's column
        for row, chain in enumerate(chains):
            first[row] = width - len(chain)
            grid[row, first[row] :] = chain
            for j in range(first[row] + 2, width):
                if grid[row, j] != blank and grid[row, j] != grid[row, j - 2]:
                    from_two[row, j] = 0.0
        self.rows, self.width = len(chains), width
        self.labels = grid.reshape(-1)  # [P * W]
        self.from_two = from_two.reshape(-1)[2:]  # [P * W - 2]: moves into states 2...
        starts = np.arange(len(chains)) * width
        self.walls = starts  # [P] each row's first column: always NEVER
        self.entries = starts + first  # [P] the leading spaces: entered at any frame
        # At the utterance's start a phrase needs no leading space (enter at its blank or first label);
        # at its end no trailing one (leave from its last label or the blank after it).
        self.start_entries = np.concatenate([self.entries, starts + first + 1, starts + first + 2])
        self.exits = starts + width - 1  # [P] the trailing spaces
        self.end_exits = (starts[:, None] + np.arange(width - 3, width)).reshape(-1)  # [P * 3]


class PhraseSpotter:
    """Feed frames as they come (``extend``), read where phrases were spotted at any time (``spotted``)."""

    def __init__(self, chains: PhraseChains) -> None:
        self.chains = chains
        # Two buffers, one holding each state's packed best path as of the frames seen ([P * W]), the
        # other the next frame's; the views a step reads and writes are made once for either way round.
        self._buffers = (np.full(len(chains.labels), NEVER), np.full(len(chains.labels), NEVER))
        width = chains.width
        self._swapped = [_step_views(*self._buffers, width), _step_views(*self._buffers[::-1], width)]
        self._views = self._swapped[0]
        self._over = np.empty(len(chains.from_two))
        self.frames = 0
        self.found: list[Spotted] = []

    @property
    def value(self) -> np.ndarray:
        """[P * W]: each state's packed best path as of the frames seen."""
        return self._views[0]

    def extend(self, log_probs: np.ndarray) -> None:
        """log_probs: [time, n_classes], the frames that follow those already seen."""
        chains = self.chains
        if chains.rows == 0 or len(log_probs) == 0:  # no phrase boosted
            self.frames += len(log_probs)
            return
        if self.frames + len(log_probs) >= MAX_FRAMES:
            raise ValueError(f"phrase spotting: an utterance of more than {MAX_FRAMES:,} frames")
        for start in range(0, len(log_probs), BLOCK):
            self._advance(np.asarray(log_probs[start : start + BLOCK], np.float64))

    def _advance(self, block: np.ndarray) -> None:
        """One block of frames (log-probs [time, n_classes]) through every chain."""
        chains = self.chains
        rel = np.maximum(np.round((block - block.max(axis=1, keepdims=True)) * GRID) / GRID, -(2.0**19))
        emitted = rel[:, chains.labels]  # [time, P * W] on the grid, <= 0
        emitted[:, chains.walls] = NEVER  # nothing crosses from one row into the next
        exits = np.empty((len(emitted), chains.rows))  # [time, P]: the trailing spaces' values
        entries, over, skip = chains.entries, self._over, chains.from_two
        for offset, frame in enumerate(emitted):
            t = self.frames + offset
            value, following, value_on, value_back, following_on, back2, following_on2, ends = self._views
            np.maximum(value_on, value_back, out=following_on)  # stay, or one state on
            np.add(back2, skip, out=over)
            np.maximum(following_on2, over, out=following_on2)  # or two, over a blank
            # Entering now: nothing before this frame (all else scores <= 0, so never worse)
            following[entries if t else chains.start_entries] = t * START
            np.add(following, frame, out=following)
            exits[offset] = ends
            self._views = self._swapped[following is self._buffers[1]]
        for offset, phrase in zip(*np.nonzero(exits + chains.boosts >= 0.0), strict=True):
            packed = float(exits[offset, phrase])
            self.found.append(self._spot(int(phrase), packed, self.frames + int(offset)))
        self.frames += len(emitted)
        if len(self.found) > 10_000:  # one utterance's worth is far fewer; keep the best if not
            self.found = sorted(self.found, key=lambda s: -s.gain)[:1000]

    def _spot(self, phrase: int, value: float, last: int) -> Spotted:
        score, first = _unpacked(value)
        return Spotted(phrase, first, last, score, score + float(self.chains.boosts[phrase]))

    def candidates(self) -> list[Spotted]:
        """Every place a phrase may be written, as of the frames seen (their end counts as the
        utterance's end): the best span per phrase and first frame, most gain first."""
        if self.frames == 0 or self.chains.rows == 0:
            return []
        ends = self.value[self.chains.end_exits].reshape(-1, 3).max(axis=1)  # [P]
        found = list(self.found)
        for phrase in np.flatnonzero(ends + self.chains.boosts >= 0.0):
            found.append(self._spot(int(phrase), float(ends[phrase]), self.frames - 1))
        best: dict[tuple[int, int], Spotted] = {}
        for spot in found:
            key = (spot.phrase, spot.first)
            if key not in best or spot.gain > best[key].gain:
                best[key] = spot
        return sorted(best.values(), key=lambda s: (-s.gain, s.first, s.phrase))

    def spotted(self) -> list[Spotted]:
        """The phrases to write, as of the frames seen, by first frame: the most gain first, never two
        over the same frames."""
        return sorted(apart(self.candidates()), key=lambda s: s.first)


def apart(candidates: Sequence[Spotted]) -> list[Spotted]:
    """From candidates in order of preference, those that share no frame with one before them."""
    chosen: list[Spotted] = []
    for candidate in candidates:
        if all(candidate.last < c.first or candidate.first > c.last for c in chosen):
            chosen.append(candidate)
    return chosen


def _step_views(value: np.ndarray, following: np.ndarray, width: int) -> tuple[np.ndarray, ...]:
    """What a step from ``value`` to ``following`` reads and writes: both, the shifted views, and the
    trailing spaces (every row's last state) of ``following``."""
    ends = following[width - 1 :: width]
    return value, following, value[1:], value[:-1], following[1:], value[:-2], following[2:], ends


def spotter_chains(
    hot_words: Mapping[str, float],
    encode: Callable[[str], list[int]],
    space: int,
    blank: int,
    scale: float = 1.0,
    margin: float = 0.0,
) -> tuple[PhraseChains, list[tuple[int, ...]]]:
    """The chains of the positively boosted phrases and their labels, in the same order. A phrase of n
    words is spotted within ``scale`` * n * its boost + ``margin`` of the best path."""
    phrases = [(tuple(encode(p)), boost * len(p.split())) for p, boost in hot_words.items() if boost > 0]
    labels = [labels for labels, _ in phrases]
    boosts = [scale * boost + margin for _, boost in phrases]
    return PhraseChains(labels, boosts, space, blank), labels


def rewritten(
    labels: Sequence[int],
    steps: Sequence[int],
    spotted: Sequence[Spotted],
    phrases: Sequence[Sequence[int]],
    space: int,
) -> tuple[list[int], list[int]]:
    """A transcript's (labels, frames) with each spotted phrase written over the labels its frames held,
    a space either side, spaces never doubled nor at the ends."""
    out: list[tuple[int, int]] = []
    pending = sorted(spotted, key=lambda s: s.first)
    index = 0
    for label, step in zip(labels, steps, strict=True):
        while index < len(pending) and pending[index].first <= step:
            out += _spelled(pending[index], phrases, space)
            index += 1
        if index and pending[index - 1].last >= step:
            continue  # under the phrase just written
        out.append((label, step))
    for spot in pending[index:]:
        out += _spelled(spot, phrases, space)
    cleaned: list[tuple[int, int]] = []
    for label, step in out:
        if label == space and (not cleaned or cleaned[-1][0] == space):
            continue
        cleaned.append((label, step))
    while cleaned and cleaned[-1][0] == space:
        cleaned.pop()
    return [label for label, _ in cleaned], [step for _, step in cleaned]


def _spelled(spot: Spotted, phrases: Sequence[Sequence[int]], space: int) -> list[tuple[int, int]]:
    """The phrase's labels with spaces either side, their frames spread over the frames it spans."""
    labels = [space, *phrases[spot.phrase], space]
    width = max(spot.last - spot.first, 0)
    return [(label, spot.first + (width * i) // max(len(labels) - 1, 1)) for i, label in enumerate(labels)]
