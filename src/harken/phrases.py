"""Hot phrases: their bounds, and the phrases to avoid, charged in the beam search.

A hot phrase ("fiona walker:6") is a sequence of words with a boost per word, DeepSpeech's hot-word unit
(natural log, added to each of the phrase's words; with a scorer it is weighed by alpha like the LM's
score). Boosted phrases are spotted beside the search (:mod:`harken.spotter`). A phrase to avoid (a
negative boost) must be charged in the search itself, so that the beam finds what to write instead; it is
charged only when the phrase is whole. :class:`PhraseGraph` is general: it can also give a positive boost
along a phrase and take back what it gave when a hypothesis leaves the phrase before its end, so that a
hypothesis' bonus is always

    (the boosts of the whole phrases it holds) + (the credit of the phrase it is part-way through)

The search proposes labels one at a time: characters without a scorer (a phrase then starts and ends at
word boundaries, so "cat" is not charged inside "concatenate"), words with one. :class:`PhraseGraph`
follows them: a trie of the phrases' label sequences whose transitions (the longest phrase prefix that
the history ends with, Aho-Corasick style) are found when first needed and then remembered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_PHRASES = 10_000  # hot phrases one search takes (the service's own limit is lower: --max_hot_words)
MAX_PHRASE_CHARACTERS = 200
MAX_BOOST = 1000.0  # |boost| per word, natural log: far past anything acoustics can outweigh

ROOT = 0  # no phrase under way; without a scorer: at a word boundary, where a phrase may start
MID_WORD = 1  # without a scorer: inside a word no phrase starts at


def checked(hot_words: Mapping[str, float]) -> dict[str, float]:
    """Hot phrases with their spaces normalised (``" fiona  walker "`` is ``"fiona walker"``); ValueError
    with one line for an empty or too long phrase, a boost that is not a finite number within
    ±MAX_BOOST, or too many phrases."""
    if len(hot_words) > MAX_PHRASES:
        raise ValueError(f"hot words: {len(hot_words):,} phrases, at most {MAX_PHRASES:,}")
    normal: dict[str, float] = {}
    for phrase, boost in hot_words.items():
        shown = repr(phrase)[:40]
        if not isinstance(phrase, str) or not phrase.split():
            raise ValueError(f"hot word {shown}: expected a word or phrase, e.g. 'fiona walker'")
        if len(phrase) > MAX_PHRASE_CHARACTERS:
            raise ValueError(f"hot word {shown}...: longer than {MAX_PHRASE_CHARACTERS} characters")
        if isinstance(boost, bool) or not isinstance(boost, (int, float)) or not abs(boost) <= MAX_BOOST:
            raise ValueError(f"hot word {shown}: boost {boost!r}, expected a number within ±{MAX_BOOST:g}")
        normal[" ".join(phrase.split())] = float(boost)
    return normal


class PhraseGraph:
    """The phrases' trie and its transitions. ``step(node, label) -> (node, score change)``.

    ``phrases`` maps each phrase's label sequence to its whole boost. ``boundary`` is the word separator
    when labels are characters (phrases start after it or at the start, and are complete when it or the
    end follows them); None when labels are words (every label is a word of its own).
    """

    def __init__(self, phrases: Mapping[tuple[int, ...], float], boundary: int | None) -> None:
        self.boundary = boundary
        self.paths: list[tuple[int, ...]] = [(), ()]  # node -> the labels that lead to it from ROOT
        self.children: list[dict[int, int]] = [{}, {}]
        self.ends: list[float] = [0.0, 0.0]  # node -> the boost of the phrase it completes (0: none)
        self.is_end: list[bool] = [False, False]
        self.pending: list[float] = [0.0, 0.0]  # node -> the credit given so far on the way to it
        self.transitions: dict[tuple[int, int], tuple[int, float]] = {}
        for labels, boost in phrases.items():
            self._insert(labels, boost)
        if boundary is None:  # a word phrase is banked as its last word arrives: nothing is pending there
            ends = self.is_end
            self.pending = [0.0 if end else credit for end, credit in zip(ends, self.pending, strict=True)]
        self.index = {path: node for node, path in enumerate(self.paths) if node != MID_WORD}

    def _insert(self, labels: tuple[int, ...], boost: float) -> None:
        node = ROOT
        for depth, label in enumerate(labels, 1):
            child = self.children[node].get(label)
            if child is None:
                child = len(self.paths)
                self.children[node][label] = child
                self.paths.append(self.paths[node] + (label,))
                self.children.append({})
                self.ends.append(0.0)
                self.is_end.append(False)
                self.pending.append(0.0)
            # A boost is given evenly along the phrase's labels; a penalty only when the phrase is whole
            # (given early, it would prune hypotheses that merely start like the phrase).
            self.pending[child] = max(self.pending[child], boost * depth / len(labels))
            node = child
        self.ends[node] += boost
        self.is_end[node] = True

    def _longest(self, history: tuple[int, ...]) -> int:
        """The deepest node whose path ``history`` ends with, starting where a phrase may start."""
        for start in self._starts(history):
            node = self.index.get(history[start:])
            if node is not None:
                return node
        return ROOT if self.boundary is None or (history and history[-1] == self.boundary) else MID_WORD

    def _starts(self, history: tuple[int, ...]) -> list[int]:
        if self.boundary is None:
            return list(range(len(history)))
        return [0] + [i + 1 for i, label in enumerate(history) if label == self.boundary]

    def _banked(self, history: tuple[int, ...]) -> float:
        """The boosts of the phrases ``history`` completes with its last label (or, with characters, that
        end just before its last label, a boundary)."""
        if self.boundary is not None:
            if not history or history[-1] != self.boundary:
                return 0.0
            history = history[:-1]
        total = 0.0
        for start in self._starts(history):
            node = self.index.get(history[start:])
            if node is not None and self.is_end[node]:
                total += self.ends[node]
        return total

    def step(self, node: int, label: int) -> tuple[int, float]:
        """(the node after ``label``, the change in the hypothesis' bonus)."""
        if node <= MID_WORD and label not in self.children[ROOT]:  # no phrase under way nor starting:
            if self.boundary is None or label == self.boundary:  # the common case, not remembered
                return ROOT, 0.0
            return MID_WORD, 0.0
        if label == self.boundary and self.paths[node][-1:] == (label,):
            return node, 0.0  # a second space is one space: transcripts show it so
        key = (node, label)
        known = self.transitions.get(key)
        if known is not None:
            return known
        if node == MID_WORD:  # only a boundary leads out of a word no phrase starts at
            result = (ROOT if label == self.boundary else MID_WORD, 0.0)
        else:
            history = self.paths[node] + (label,)
            target = self._longest(history)
            result = (target, self._banked(history) + self.pending[target] - self.pending[node])
        if len(self.transitions) < 1_000_000:  # bounded: phrases are bounded, this is a safety net
            self.transitions[key] = result
        return result

    def finish(self, node: int) -> float:
        """The change in the bonus when the utterance ends at ``node`` (the end is a boundary)."""
        if self.boundary is None or node == MID_WORD:
            return -self.pending[node]
        return self._banked(self.paths[node] + (self.boundary,)) - self.pending[node]


def character_graph(phrases: Mapping[str, float], encode: Any, space: int) -> PhraseGraph:
    """Phrases spelled in the model's labels (``encode(text) -> labels``), boundaries at ``space``: the
    boost of a phrase of n words is n times its per-word boost, given evenly along its characters."""
    spelled: dict[tuple[int, ...], float] = {}
    for phrase, boost in phrases.items():
        words = phrase.split()
        labels = tuple(encode(" ".join(words)))
        spelled[labels] = spelled.get(labels, 0.0) + boost * len(words)
    return PhraseGraph(spelled, space)


def word_graph(phrases: Mapping[str, float], index: Mapping[str, int]) -> PhraseGraph:
    """Phrases as sequences of the search's word indices: each word of a phrase carries its boost."""
    spelled: dict[tuple[int, ...], float] = {}
    for phrase, boost in phrases.items():
        words = tuple(index[word] for word in phrase.split())
        spelled[words] = spelled.get(words, 0.0) + boost * len(words)
    return PhraseGraph(spelled, None)


def phrase_lm(graph: PhraseGraph) -> Any:
    """A flashlight LM for the lexicon-free search without a scorer: its score is the phrases' bonus
    (natural log; the search's LM weight is 1). Its states are the label prefixes, as flashlight's ZeroLM's
    are (the search merges hypotheses only when their states are equal), each knowing its phrase node.
    One per search: it keeps its states."""
    from flashlight.lib.text.decoder import LM, LMState

    class PhraseLM(LM):
        def __init__(self) -> None:
            super().__init__()
            self.nodes: dict[Any, int] = {}  # state (a label prefix) -> its phrase node

        def start(self, start_with_nothing: bool) -> Any:
            state = LMState()
            self.nodes[state] = ROOT
            return state

        def score(self, state: Any, label: int) -> tuple[Any, float]:  # called per hypothesis and label
            node, change = graph.step(self.nodes[state], label)
            out = state.child(label)
            self.nodes[out] = node
            return out, change

        def finish(self, state: Any) -> tuple[Any, float]:
            return state, graph.finish(self.nodes[state])

    return PhraseLM()


_PHRASE = 1 << 29  # LM state keys (C ints) of a phrase under way: past KenLM's word ids


def boosted_word_lm(kenlm: Any, to_lm: Sequence[int], graph: PhraseGraph, ln10: float) -> Any:
    """KenLM with hot phrases for the lexicon search: each word's score is KenLM's (log10) plus the
    change in the phrases' bonus (natural log, so / ln 10; the search weighs both by alpha). Words a hot
    phrase adds to the vocabulary are scored as KenLM's unknown word. One per search: it keeps its states."""
    from flashlight.lib.text.decoder import LM

    class BoostedLM(LM):
        def __init__(self) -> None:
            super().__init__()
            self.parts: dict[Any, tuple[Any, int]] = {}  # a phrase state -> (KenLM state, node)

        def _state(self, base: Any, node: int) -> Any:
            if node == ROOT:
                return base
            state = base.child(_PHRASE + node)
            self.parts.setdefault(state, (base, node))
            return state

        def start(self, start_with_nothing: bool) -> Any:
            return kenlm.start(start_with_nothing)

        def score(self, state: Any, word: int) -> tuple[Any, float]:
            base, node = self.parts.get(state, (state, ROOT))
            out, log10 = kenlm.score(base, to_lm[word])
            target, change = graph.step(node, word)
            return self._state(out, target), log10 + change / ln10

        def finish(self, state: Any) -> tuple[Any, float]:
            base, node = self.parts.get(state, (state, ROOT))
            out, log10 = kenlm.finish(base)
            return out, log10 + graph.finish(node) / ln10

    return BoostedLM()
