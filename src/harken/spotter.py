"""Hot phrases: a CTC phrase spotter beside the beam search.

A boost asks one question: over some stretch of frames, does spelling the phrase there (a word of its
own: a space before and after it, unless it starts or ends the utterance) score within its boost of what
would be written there otherwise? The spotter asks it for every phrase at every frame at once. Without a
scorer its answer decides: a phrase is written where its boost makes up for its acoustics. With one, the
decoder weighs each place it proposes with the search's own score (the LM included). Only whole phrases
are ever written, so a partial match earns nothing.

Scores are relative to the best path: ``rel[t, k] = log p(k | t) - max_j log p(j | t) <= 0``, so the best
path scores 0 over any stretch, and a phrase spelled from frame s to frame e scores ``r <= 0`` (its best
CTC alignment there, found by a Viterbi pass over all phrases' chains side by side). A phrase is spotted
where ``r + boost >= 0`` (its boost: per word, natural log, times its words), the most gain first, never
two over the same frames. The pass is causal and goes frame by frame, so a stream spots exactly what the
whole file does, and each frame costs a few vector operations whatever the number of phrases.
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
MAX_HITS = 100_000  # places kept while a stream goes on (one utterance's worth is far fewer)
MAX_CANDIDATES = 10_000  # places ever proposed for one transcript
MAX_FRAMES = 2**20  # about 5.8 hours at 20 ms a frame: an utterance is far shorter


@dataclass(frozen=True)
class Spotted:
    phrase: int  # index into the spotter's phrases
    first: int  # first frame it spans (its leading space, or 0)
    last: int  # last frame it spans
    score: float  # its best alignment's score over those frames relative to the best path's (<= 0)
    gain: float  # score plus its boost (>= 0)


def _fields(hits: np.ndarray, boosts: np.ndarray) -> tuple[np.ndarray, ...]:
    """hits [n, 3] (phrase, packed value, last frame) -> phrase, first frame, last frame, score, gain."""
    phrase, value, last = hits[:, 0].astype(np.int64), hits[:, 1], hits[:, 2].astype(np.int64)
    score = np.floor(value * GRID) / GRID
    first = np.round((value - score) / START).astype(np.int64)
    return phrase, first, last, score, score + boosts[phrase]


def _best(hits: np.ndarray, boosts: np.ndarray) -> np.ndarray:
    """The hits with the most gain per phrase and first frame, most gain first (ties: earlier, then the
    phrase listed first)."""
    phrase, first, _, _, gain = _fields(hits, boosts)
    order = np.lexsort((phrase, first, -gain))
    _, keep = np.unique(np.stack([phrase[order], first[order]], axis=1), axis=0, return_index=True)
    return hits[order[np.sort(keep)]]


class PhraseChains:
    """Every phrase's CTC chain as two rows of states: ``labels`` [space, c1, ..., cn, space] and, after
    each, the blank that may follow it. Rows have width W, right-aligned (the trailing space in the last
    column) after at least one column of padding, and lie end to end in one vector per kind (contiguous
    arrays step several times faster than strided ones); the padding, whose label scores NEVER, is a wall
    between rows."""

    def __init__(self, phrases: Sequence[Sequence[int]], boosts: Sequence[float], space: int, blank: int):
        chains = [[space, *labels, space] for labels in phrases]
        width = 1 + max((len(chain) for chain in chains), default=2)
        self.boosts = np.asarray(boosts, np.float64)  # [P] whole-phrase boosts
        self.blank, self.rows, self.width = blank, len(chains), width
        grid = np.full((len(chains), width), -1, np.int64)  # [P, W]; -1: padding
        for row, chain in enumerate(chains):
            grid[row, width - len(chain) :] = chain
        self.labels = grid.reshape(-1)  # [P * W]: each label state's label (-1: padding, scored NEVER)
        # A label follows the one before it directly or over a blank, except a repeated label, which needs
        # the blank between (CTC would merge the two): these are the states before a repeat.
        repeats = (self.labels[1:] == self.labels[:-1]) & (self.labels[1:] >= 0)
        self.before_repeats = np.flatnonzero(repeats)
        starts = np.arange(len(chains)) * width
        first = starts + width - np.asarray([len(chain) for chain in chains], np.int64)
        self.entries = first  # [P] the leading spaces: entered at any frame
        # At the utterance's start a phrase needs no leading space: it may enter at the blank after that
        # space or at its first label; at the utterance's end it may leave from its last label or the
        # blank after it, not only from its trailing space.
        self.first_labels = first + 1
        self.exits = starts + width - 1  # [P] the trailing spaces


class PhraseSpotter:
    """Feed frames as they come (``extend``), read where phrases were spotted at any time (``spotted``)."""

    def __init__(self, chains: PhraseChains) -> None:
        self.chains = chains
        size, width = len(chains.labels), chains.width
        self.said = np.full(size, NEVER)  # [P * W] packed best path that ends in each label state
        self.after = np.full(size, NEVER)  # [P * W] ... in the blank after it
        self._done = np.empty(size)  # [P * W] ... that has said the label, with or without the blank
        self._views = (self.said[1:], self._done[:-1], self.said[width - 1 :: width])
        self.frames = 0
        self.found: list[np.ndarray] = []  # [hits, 3] blocks: phrase, packed value, last frame
        self._hits = 0

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
        rel = np.concatenate([rel, np.full((len(rel), 1), NEVER)], axis=1)  # label -1 (padding): NEVER
        emitted = np.take(rel, chains.labels, axis=1)  # [time, P * W] on the grid, <= 0 (C order: fast)
        blanks = rel[:, chains.blank].tolist()  # [time]
        exits = np.empty((len(emitted), chains.rows))  # [time, P]: the trailing spaces' values
        said, after, done, entries = self.said, self.after, self._done, chains.entries
        repeats = chains.before_repeats if len(chains.before_repeats) else None
        said_on, done_back, trailing = self._views
        for offset, frame in enumerate(emitted):
            t = self.frames + offset
            np.maximum(said, after, out=done)
            if repeats is None:
                np.add(done, blanks[offset], out=after)  # a blank: after the label, or after its blank
            else:
                kept = after[repeats]  # before a repeated label only the blank may lead on
                np.add(done, blanks[offset], out=after)
                done[repeats] = kept
            np.maximum(said_on, done_back, out=said_on)  # the same label again, or the next one
            said[entries] = t * START  # entering now: nothing before (all else scores <= 0: never worse)
            if t == 0:
                said[chains.first_labels] = 0.0
                after[entries] = blanks[offset]
            np.add(said, frame, out=said)
            exits[offset] = trailing
        offsets, phrases = np.nonzero(exits + chains.boosts >= 0.0)
        if len(phrases):  # [hits]: the phrase, its packed value, its last frame
            self.found.append(np.stack([phrases, exits[offsets, phrases], self.frames + offsets], axis=1))
            self._hits += len(phrases)
        self.frames += len(emitted)
        if self._hits > MAX_HITS and self.frames % BLOCK == 0:  # at the same frames however fed
            best = _best(np.concatenate(self.found), chains.boosts)[: MAX_HITS // 2]
            self.found, self._hits = [best], len(best)

    def candidates(self) -> list[Spotted]:
        """Every place a phrase may be written, as of the frames seen (their end counts as the
        utterance's end): the best span per phrase and first frame, most gain first."""
        if self.frames == 0 or self.chains.rows == 0:
            return []
        last = self.chains.exits - 1  # the last labels
        ends = np.maximum(np.maximum(self.said[last], self.after[last]), self.said[self.chains.exits])  # [P]
        phrases = np.flatnonzero(ends + self.chains.boosts >= 0.0)
        last_frame = np.full(len(phrases), self.frames - 1)
        found = [*self.found, np.stack([phrases, ends[phrases], last_frame], axis=1)]
        best = _best(np.concatenate(found), self.chains.boosts)[:MAX_CANDIDATES]
        return [
            Spotted(int(phrase), int(first), int(last), float(score), float(gain))
            for phrase, first, last, score, gain in zip(*_fields(best, self.chains.boosts), strict=True)
        ]

    def spotted(self) -> list[Spotted]:
        """The phrases to write, as of the frames seen, by first frame: the most gain first, never two
        over the same frames."""
        return sorted(apart(self.candidates()), key=lambda s: s.first)


SHARED_FRAMES = 3  # two phrases back to back share the space between them (a CTC space is 1-3 frames)


def apart(candidates: Sequence[Spotted]) -> list[Spotted]:
    """From candidates in order of preference, those that overlap none before them by more than the
    space two phrases back to back share."""
    chosen: list[Spotted] = []
    for candidate in candidates:
        if all(_ordered(candidate, c) or _ordered(c, candidate) for c in chosen):
            chosen.append(candidate)
    return chosen


def _ordered(before: Spotted, after: Spotted) -> bool:
    return before.first < after.first and before.last < after.first + SHARED_FRAMES


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
    boosts = [min(scale * boost + margin, 2.0**18) for _, boost in phrases]  # within the packing's range
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
    said = [
        [
            step
            for label, step in zip(labels, steps, strict=True)
            if s.first <= step <= s.last and label != space
        ]
        for s in pending
    ]  # the frames of the letters each phrase is written over: where it was said
    index = 0
    for label, step in zip(labels, steps, strict=True):
        while index < len(pending) and pending[index].first <= step:
            out += _spelled(pending[index], said[index], phrases, space)
            index += 1
        if index and pending[index - 1].last >= step:
            continue  # under the phrase just written
        out.append((label, step))
    for spot, frames in zip(pending[index:], said[index:], strict=True):
        out += _spelled(spot, frames, phrases, space)
    cleaned: list[tuple[int, int]] = []
    for label, step in out:
        if label == space and (not cleaned or cleaned[-1][0] == space):
            continue
        cleaned.append((label, step))
    while cleaned and cleaned[-1][0] == space:
        cleaned.pop()
    return [label for label, _ in cleaned], [step for _, step in cleaned]


def _spelled(
    spot: Spotted, said: Sequence[int], phrases: Sequence[Sequence[int]], space: int
) -> list[tuple[int, int]]:
    """The phrase's labels with spaces either side, their frames spread from the first to the last frame
    of the letters written over (``said``), or over the frames it spans where there were none."""
    first, last = (min(said), max(said)) if said else (spot.first, spot.last)
    letters = phrases[spot.phrase]
    width = max(last - first, 0)
    spread = [first + (width * i) // max(len(letters) - 1, 1) for i in range(len(letters))]
    return [(space, first), *zip(letters, spread, strict=True), (space, last)]
