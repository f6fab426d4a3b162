"""Hot phrases written into the beam search's transcripts: what the spotter (:mod:`harken.spotter`)
proposes, kept where it should be.

Without a scorer a phrase is written where its boost makes up for its acoustics. With a word scorer each
place is weighed as the lexicon search would weigh the changed transcript: its path's acoustics over the
phrase's frames against the phrase's, ``alpha * (ln P_LM + boost)`` and ``beta`` per word, the LM scored
over the words around the change only (an n-gram LM looks no further). Either way a phrase is not written
where it changes nothing (the transcript keeps its own timings), where it would bring back a phrase the
user asked to avoid, or, with a scorer, where it would leave a piece of a word the vocabulary lacks ("th
eat" from "the"): the search could never have written that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harken.alphabet import Alphabet
from harken.phrases import PhraseGraph, character_graph
from harken.scorer import LN10, Scorer, ScorerError
from harken.spotter import PhraseChains, PhraseSpotter, Spotted, apart, rewritten, spotter_chains

RESCORE_MARGIN = 20.0  # nats past a phrase's weighed boost that the spotter still proposes with a scorer
MAX_JUDGED = 2000  # places weighed for a final transcript (each costs a few LM calls), the likeliest first
MAX_JUDGED_PARTIAL = 16  # ... for a partial one (a stream reads one every step; finals weigh them all)
LM_CONTEXT = 5  # words either side of a change an n-gram LM can see (KenLM's orders go up to 6)


@dataclass(frozen=True)
class Spotting:
    """Hot phrases for the search: the spotter's chains for the boosted ones, each phrase's labels and
    whole boost (per word times its words), the phrases to avoid, and (without a scorer) their graph,
    charged in the search itself (the beam must find what to write instead)."""

    chains: PhraseChains | None
    labels: list[tuple[int, ...]]
    boosts: list[float]
    words: list[tuple[str, ...]]  # each boosted phrase's words
    avoided: tuple[str, ...]
    penalties: PhraseGraph | None


def spotting(
    alphabet: Alphabet, hot_words: Mapping[str, float], scorer: Scorer | None, alpha: float
) -> Spotting:
    """Hot phrases spelled in the model's labels, words apart at its space; with a scorer the spotter
    proposes within alpha * boost + RESCORE_MARGIN. ScorerError (one line) for a phrase the alphabet
    cannot spell."""
    if " " not in alphabet.symbols:
        raise ScorerError("hot words: the model's alphabet has no space, so it has no words to boost")
    for phrase in hot_words:
        missing = alphabet.unknown(phrase)
        if missing:
            shown = "".join(sorted(set(missing)))[:10]
            raise ScorerError(f"hot word {phrase!r}: the model's alphabet cannot spell it ({shown!r})")
    space = alphabet.encode(" ")[0]
    boosted = {phrase: boost for phrase, boost in hot_words.items() if boost > 0}
    scale, margin = (1.0, 0.0) if scorer is None else (alpha, RESCORE_MARGIN)
    chains, labels = spotter_chains(boosted, alphabet.encode, space, alphabet.blank, scale, margin)
    boosts = [boost * len(phrase.split()) for phrase, boost in boosted.items()]
    avoided = {phrase: boost for phrase, boost in hot_words.items() if boost < 0}
    penalties = character_graph(avoided, alphabet.encode, space) if avoided and scorer is None else None
    words = [tuple(phrase.split()) for phrase in boosted]
    return Spotting(chains if labels else None, labels, boosts, words, tuple(avoided), penalties)


def spotting_for(alphabet: Alphabet, settings: Any, scorer: Scorer | None) -> Spotting | None:
    """The spotting of ``settings.hot_words`` (a decoder's BeamSettings) for a search with or without
    ``scorer``; None without hot words or with a UTF-8 scorer (its character LM takes its hot words)."""
    if not settings.hot_words or (scorer is not None and scorer.utf8):
        return None
    alpha = 1.0 if scorer is None else settings.weights(scorer)[0]
    return spotting(alphabet, settings.hot_words, scorer, alpha)


class PhraseWriter:
    """One search's phrase writing: its spotter, the frames it saw (to weigh paths) and the places
    already weighed (a stream reads its best transcript at every step)."""

    def __init__(
        self, spots: Spotting, alphabet: Alphabet, scorer: Scorer | None, weights: tuple[float, float]
    ) -> None:
        assert spots.chains is not None
        self.spots, self.alphabet, self.scorer, self.weights = spots, alphabet, scorer, weights
        self.spotter = PhraseSpotter(spots.chains)
        self.space = alphabet.encode(" ")[0]
        self._seen: list[np.ndarray] = []  # with a scorer: the frames, relative to their best label
        self._weighed: dict[tuple[Spotted, str, tuple[int, ...]], float] = {}

    def extend(self, frames: np.ndarray) -> None:
        """frames: [time, n_classes] log-probs, the frames that follow those already seen."""
        self.spotter.extend(frames)
        if self.scorer is not None:
            self._seen.append(frames - frames.max(axis=1, keepdims=True))

    def written(self, decoded: Any, path: np.ndarray, final: bool) -> tuple[list[int], list[int]] | None:
        """(labels, frames) of ``decoded`` (a Decoded; ``path``: its label at every frame) with the
        phrases written in, or None where none is."""
        proposed = self.spotter.spotted() if self.scorer is None else self._judged(decoded, path, final)
        chosen = [spot for spot in proposed if self._changes(decoded, spot)]
        if not chosen:
            return None
        return rewritten(decoded.labels, decoded.timesteps, chosen, self.spots.labels, self.space)

    def _changes(self, decoded: Any, spot: Spotted) -> bool:
        """Whether writing ``spot`` changes the transcript without bringing back a phrase to avoid."""
        labels, _ = rewritten(decoded.labels, decoded.timesteps, [spot], self.spots.labels, self.space)
        if list(labels) == list(decoded.labels):
            return False
        before, after = f" {decoded.text} ", f" {self.alphabet.decode(labels)} "
        return all(after.count(f" {p} ") <= before.count(f" {p} ") for p in self.spots.avoided)

    def _judged(self, decoded: Any, path: np.ndarray, final: bool) -> list[Spotted]:
        """The places where writing the phrase raises the search's own score of ``decoded``, most first.
        A final transcript weighs them all afresh (so a stream ends as the whole file does); a partial
        weighs the likeliest and remembers them, by all they depend on."""
        limit = MAX_JUDGED if final else MAX_JUDGED_PARTIAL
        judged: list[tuple[float, Spotted]] = []
        if len(self._weighed) > 100_000:  # a long stream: what was weighed for old transcripts goes
            self._weighed.clear()
        seen: np.ndarray | None = None
        steps = path  # [frames] int64 (none at a stream's very start)
        for found in self.spotter.candidates()[:limit]:
            if found.last >= len(steps):  # the hypothesis has not reached the phrase's end yet
                continue
            spot = _widened(found, decoded.labels, decoded.timesteps, self.space)
            key = (found, decoded.text, tuple(path[spot.first : spot.last + 1]))
            change = None if final else self._weighed.get(key)
            if change is None:
                if seen is None:
                    seen = np.concatenate(self._seen) if len(self._seen) > 1 else self._seen[0]
                    self._seen = [seen]  # [time, n_classes]
                change = self._change(decoded, steps, seen, found, spot)
                self._weighed[key] = change
            if change >= 0.0:
                judged.append((change, spot))
        return apart([spot for _, spot in sorted(judged, key=lambda pair: -pair[0])])

    def _change(
        self, decoded: Any, path: np.ndarray, seen: np.ndarray, found: Spotted, spot: Spotted
    ) -> float:
        """How much the search's score of ``decoded`` rises with ``spot`` (``found`` widened to whole
        words) written (-inf: never). The new path: the phrase's over ``found``, blanks over the rest."""
        assert self.scorer is not None
        alpha, beta = self.weights
        span = np.arange(spot.first, spot.last + 1)
        rest = span[(span < found.first) | (span > found.last)]
        spoken = found.score + float(seen[rest, self.alphabet.blank].sum())
        acoustic = spoken - float(seen[span, path[span]].sum())  # against the transcript's own path
        changed, _ = rewritten(decoded.labels, decoded.timesteps, [spot], self.spots.labels, self.space)
        words, new = decoded.text.split(), self.alphabet.decode(changed).split()
        phrase = set(self.spots.words[spot.phrase])
        if any(word not in phrase and not self.scorer.knows(word) for word in new):
            return float("-inf")  # a piece of a word left beside the phrase: the search cannot spell it
        lm = LN10 * _lm_change(self.scorer, words, new) + self.spots.boosts[spot.phrase]
        return acoustic + alpha * lm + beta * (len(new) - len(words))


def _widened(spot: Spotted, labels: Sequence[int], steps: Sequence[int], space: int) -> Spotted:
    """``spot`` spanning the whole words of the transcript it touches (with a scorer a rewrite may not
    leave a piece of a word: the search could not spell it)."""
    first, last = spot.first, spot.last
    word: list[int] = []
    for label, step in [*zip(labels, steps, strict=True), (space, -1)]:
        if label != space:
            word.append(step)
            continue
        if word and any(first <= frame <= last for frame in word):
            first, last = min(first, word[0]), max(last, word[-1])
        word = []
    return dataclasses.replace(spot, first=first, last=last)


def _lm_change(scorer: Scorer, words: Sequence[str], new: Sequence[str]) -> float:
    """log10 P(new) - log10 P(words) for an n-gram LM, from the words around where they differ."""
    same = 0
    while same < min(len(words), len(new)) and words[same] == new[same]:
        same += 1
    tail = 0
    while tail < min(len(words), len(new)) - same and words[-1 - tail] == new[-1 - tail]:
        tail += 1
    start = max(0, same - LM_CONTEXT)
    changes = []
    for sequence in (words, new):
        stop = len(sequence) - tail + LM_CONTEXT  # the words after the change see it: score them too
        window = sequence[start:stop]
        changes.append(scorer.log10(window, same - start, start == 0, stop >= len(sequence)))
    return changes[1] - changes[0]
