from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from harken.alphabet import Alphabet
from harken.spotter import SHARED_FRAMES, PhraseSpotter, Spotted, rewritten, spotter_chains

ALPHABET = Alphabet.from_file(Path(__file__).parent / "data" / "alphabet.txt")
BLANK, SPACE = ALPHABET.blank, ALPHABET.encode(" ")[0]
SECOND = math.log(0.3 / 0.6)  # a frame's second choice, relative to its first


def frames(best: str, second: str = "") -> np.ndarray:
    """Log-probs: per frame ``best`` holds the likeliest label (0.6, '_' the blank) and ``second`` (where
    not '.') the next likeliest (0.3); the rest share what is left."""
    second = second.ljust(len(best), ".")
    out = np.full((len(best), ALPHABET.n_classes), 0.1 / (ALPHABET.n_classes - 2), np.float32)
    for t, (first, other) in enumerate(zip(best, second, strict=True)):
        label = BLANK if first == "_" else ALPHABET.encode(first)[0]
        out[t, label] = 0.6
        if other != ".":
            out[t, BLANK if other == "_" else ALPHABET.encode(other)[0]] = 0.3
    return np.log(out / out.sum(axis=1, keepdims=True))


def spot(hot: dict[str, float], log_probs: np.ndarray, pieces: int = 1) -> list[tuple[str, int, int]]:
    chains, labels = spotter_chains(hot, ALPHABET.encode, SPACE, BLANK)
    spotter = PhraseSpotter(chains)
    for piece in np.array_split(log_probs, pieces):
        spotter.extend(piece)
    return [(ALPHABET.decode(labels[s.phrase]), s.first, s.last) for s in spotter.spotted()]


# "the feone walker now": "fiona walker" is the second choice on two frames ('i' for 'e', 'a' for 'e')
SAID = "the_ fe_o_ne_ walker_ now"
ALSO = "......i....a............."


def test_a_phrase_within_its_boost_of_the_best_path_is_spotted() -> None:
    log_probs = frames(SAID, ALSO)
    gap = -2 * SECOND  # two frames of second choices; a phrase of 2 words gets twice its boost
    assert spot({"fiona walker": 0.55 * gap}, log_probs) == [("fiona walker", 4, 21)]
    assert spot({"fiona walker": 0.45 * gap}, log_probs) == []


def test_what_it_spans_and_how_it_is_written() -> None:
    log_probs = frames(SAID, ALSO)
    chains, labels = spotter_chains({"fiona walker": 3.0}, ALPHABET.encode, SPACE, BLANK)
    spotter = PhraseSpotter(chains)
    spotter.extend(log_probs)
    found = spotter.spotted()
    greedy = [(ALPHABET.encode(c)[0], t) for t, c in enumerate(SAID) if c != "_" and SAID[t - 1 : t] != c]
    out, steps = rewritten([g[0] for g in greedy], [g[1] for g in greedy], found, labels, SPACE)
    assert ALPHABET.decode(out) == "the fiona walker now"
    assert steps == sorted(steps) and len(steps) == len(out)


def test_a_partial_match_is_not_rewarded() -> None:
    log_probs = frames(SAID, ALSO)
    assert spot({"fiona walks": 3.0, "fiona": 0.1, "walker nine": 5.0}, log_probs) == []


def test_a_phrase_is_a_word_of_its_own() -> None:
    log_probs = frames("con_cat_enate_")
    assert spot({"cat": 3.0}, log_probs) == []  # a space either side would cost far more
    assert spot({"cat": 3.0}, frames("con_ cat_ enate_")) == [("cat", 4, 9)]


def test_the_utterance_start_and_end_need_no_space() -> None:
    assert spot({"walker": 1.0}, frames("walker")) == [("walker", 0, 5)]
    assert spot({"walker": 1.0}, frames("__walker__")) == [("walker", 0, 9)]


def test_a_stream_spots_what_the_whole_file_does() -> None:
    log_probs = frames(SAID * 3, ALSO * 3)
    hot = {"fiona walker": 3.0, "now": 0.5, "the": 0.2}
    whole = spot(hot, log_probs)
    assert len(whole) >= 3
    rng = random.Random(4)
    for _ in range(5):
        assert spot(hot, log_probs, pieces=rng.randint(2, 40)) == whole


def test_never_two_over_the_same_words() -> None:
    """Phrases back to back share the space between them, and nothing more."""
    found = spot({"fiona walker": 5.0, "walker now": 5.0, "fiona": 5.0}, frames(SAID, ALSO))
    assert found == [("fiona", 4, 13), ("walker now", 13, 24)]  # 'walker now' gains most, then 'fiona'
    spans = sorted((first, last) for _, first, last in found)
    assert all(a[1] < b[0] + SHARED_FRAMES for a, b in zip(spans, spans[1:], strict=False))


def test_penalties_are_not_spotted() -> None:
    assert spot({"walker": -5.0}, frames("walker")) == []


@pytest.mark.parametrize("spots", [[], [Spotted(0, 0, 2, 0.0, 1.0)], [Spotted(0, 8, 12, 0.0, 1.0)]])
def test_rewritten_keeps_what_lies_outside(spots: list[Spotted]) -> None:
    labels = ALPHABET.encode("ab cd ef")
    steps = [0, 1, 3, 5, 6, 8, 10, 12][: len(labels)]
    out, _ = rewritten(labels, steps, spots, [tuple(ALPHABET.encode("xy"))], SPACE)
    text = ALPHABET.decode(out)
    expected = {0: "ab cd ef", 1: "xy cd ef", 2: "ab cd xy"}[len(spots) and (1 if spots[0].first == 0 else 2)]
    assert text == expected
