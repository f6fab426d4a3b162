"""The hot phrases' graph: a hypothesis keeps the boosts of the whole phrases it holds, and nothing of one
it left or ended inside."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from harken.alphabet import Alphabet
from harken.phrases import ROOT, PhraseGraph, character_graph, word_graph

ALPHABET = Alphabet.from_file(Path(__file__).parent / "data" / "alphabet.txt")
SPACE = ALPHABET.encode(" ")[0]


def bonus(graph: PhraseGraph, labels: list[int]) -> tuple[float, list[float]]:
    """(the bonus at the end, the bonus after each label)."""
    node, total, trace = ROOT, 0.0, []
    for label in labels:
        node, change = graph.step(node, label)
        total += change
        trace.append(total)
    return total + graph.finish(node), trace


def spoken(graph: PhraseGraph, text: str) -> float:
    return bonus(graph, ALPHABET.encode(text))[0]


@pytest.fixture(scope="module")
def characters() -> PhraseGraph:
    return character_graph({"fiona walker": 6.0, "cat": 2.0, "cat flap": 1.0}, ALPHABET.encode, SPACE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fiona walker", 12.0),  # two words at 6 each
        ("call fiona walker now", 12.0),
        ("fiona walker fiona walker", 24.0),
        ("fiona fiona walker", 12.0),  # a match that restarts inside a failed one
        ("fiona  walker", 12.0),  # two spaces are one (as the transcript shows them)
        ("fiona walkers", 0.0),  # no boundary after it: not the phrase
        ("xfiona walker", 0.0),  # no boundary before it
        ("fiona walk", 0.0),  # the utterance ends inside it
        ("fiona", 0.0),  # ... at a word boundary inside it
        ("call fiona", 0.0),
        ("fiona wa lker", 0.0),
        ("concatenate", 0.0),
        ("a cat sat", 2.0),
        ("cat flap", 2.0 + 2.0),  # "cat" and "cat flap" are both whole
        ("cat flop", 2.0),
        ("", 0.0),
        ("   ", 0.0),
    ],
)
def test_only_whole_phrases_keep_their_boost(characters: PhraseGraph, text: str, expected: float) -> None:
    assert spoken(characters, text) == pytest.approx(expected)


def test_credit_is_given_along_the_phrase_and_taken_back(characters: PhraseGraph) -> None:
    _, trace = bonus(characters, ALPHABET.encode("fiona walkers"))
    assert trace[:12] == pytest.approx([float(i) for i in range(1, 13)])  # 12 over 12 characters
    assert trace[12] == pytest.approx(0.0)  # "s": no longer the phrase


def test_a_penalty_is_charged_only_on_the_whole_phrase() -> None:
    graph = character_graph({"wash water": -10.0}, ALPHABET.encode, SPACE)
    _, trace = bonus(graph, ALPHABET.encode("wash water"))
    assert max(abs(x) for x in trace) == 0.0  # nothing before the phrase is whole (and bounded)
    assert spoken(graph, "wash water") == pytest.approx(-20.0)
    assert spoken(graph, "wash wat") == spoken(graph, "wash waters") == 0.0


def test_words() -> None:
    index = {"fiona": 1, "walker": 2, "cat": 3, "flap": 4, "the": 5}
    graph = word_graph({"fiona walker": 6.0, "cat": 2.0, "cat flap": 1.0}, index)

    def said(text: str) -> float:
        return bonus(graph, [index[word] for word in text.split()])[0]

    assert said("fiona walker") == said("the fiona walker") == pytest.approx(12.0)
    assert said("fiona") == said("fiona the walker") == said("walker") == 0.0
    assert said("fiona fiona walker") == pytest.approx(12.0)
    assert said("cat") == pytest.approx(2.0) and said("cat flap") == pytest.approx(4.0)
    _, trace = bonus(graph, [1, 2])
    assert trace == pytest.approx([6.0, 12.0])  # each word its boost as it arrives


def test_the_end_is_a_boundary_that_keeps_only_whole_phrases() -> None:
    """For random phrase sets and random label sequences, the bonus at the end is the sum of the boosts of
    the whole phrases found at word boundaries (characters) or anywhere (words)."""
    rng = random.Random(7)
    for _ in range(300):
        phrases = {}
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(["a", "b", "ab", "ba"]) for _ in range(rng.randint(1, 3))]
            phrases[" ".join(words)] = rng.choice([-2.0, 1.0, 3.0])
        graph = character_graph(phrases, ALPHABET.encode, SPACE)
        text = " ".join(rng.choice(["a", "b", "ab", "ba", "c"]) for _ in range(rng.randint(0, 6)))
        padded = f" {text} "
        expected = sum(  # every start, overlapping ones too
            boost * len(p.split()) * sum(padded.startswith(f" {p} ", i) for i in range(len(padded)))
            for p, boost in phrases.items()
        )
        assert spoken(graph, text) == pytest.approx(expected), (phrases, text)


def test_transitions_are_remembered(characters: PhraseGraph) -> None:
    first = characters.step(ROOT, ALPHABET.encode("f")[0])
    assert characters.step(ROOT, ALPHABET.encode("f")[0]) is first
