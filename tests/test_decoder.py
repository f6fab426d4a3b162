from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harken import decoder
from harken.alphabet import Alphabet

DATA = Path(__file__).parent / "data"
ALPHABET = Alphabet.from_file(DATA / "alphabet.txt")
BLANK = ALPHABET.blank  # 28: space, a-z, apostrophe, then the blank


def frames(path: str, confident: float = 0.9) -> torch.Tensor:
    """Log-probs whose best class per frame spells ``path`` ('_' is the blank)."""
    n_classes = ALPHABET.n_classes
    other = (1.0 - confident) / (n_classes - 1)
    probs = torch.full((len(path), n_classes), other)
    for t, ch in enumerate(path):
        probs[t, BLANK if ch == "_" else ALPHABET.encode(ch)[0]] = confident
    return probs.log()


def test_blank_is_the_last_class() -> None:
    assert BLANK == 28 and ALPHABET.n_classes == 29


def test_greedy_merges_repeats_and_drops_blanks() -> None:
    out = decoder.greedy(frames("__hhh_ee__y___"), 14, ALPHABET)
    assert out.text == "hey"
    assert out.timesteps == (2, 6, 10)


def test_greedy_keeps_a_letter_repeated_across_a_blank() -> None:
    assert decoder.greedy(frames("hel_lo"), 6, ALPHABET).text == "hello"
    assert decoder.greedy(frames("hello"), 5, ALPHABET).text == "helo"  # no blank: merged
    assert decoder.greedy(frames("a_a_a"), 5, ALPHABET).text == "aaa"
    assert decoder.greedy(frames("hel_lo"), 6, ALPHABET).timesteps == (0, 1, 2, 4, 5)


def test_greedy_spaces_and_apostrophes() -> None:
    out = decoder.greedy(frames("i_  _'_mm"), 9, ALPHABET)
    assert out.text == "i 'm"
    assert out.timesteps == (0, 2, 5, 7)


def test_greedy_respects_length() -> None:
    log_probs = frames("ab_cd")
    assert decoder.greedy(log_probs, 5, ALPHABET).text == "abcd"
    assert decoder.greedy(log_probs, 3, ALPHABET).text == "ab"
    assert decoder.greedy(log_probs, 1, ALPHABET).text == "a"
    empty = decoder.greedy(log_probs, 0, ALPHABET)
    assert empty.text == "" and empty.timesteps == () and empty.confidence == 0.0


def test_greedy_all_blanks() -> None:
    out = decoder.greedy(frames("_____"), 5, ALPHABET)
    assert out.text == "" and out.timesteps == ()


def test_greedy_confidence_is_the_sum_of_the_chosen_log_probs() -> None:
    out = decoder.greedy(frames("ab_", confident=0.5), 3, ALPHABET)
    assert out.confidence == pytest.approx(3 * torch.log(torch.tensor(0.5)).item(), abs=1e-5)
    limited = decoder.greedy(frames("ab_", confident=0.5), 2, ALPHABET)
    assert limited.confidence == pytest.approx(2 * torch.log(torch.tensor(0.5)).item(), abs=1e-5)


def test_greedy_batch() -> None:
    first, second = frames("_c_aat__"), frames("dd_o_g__")
    batch = torch.stack([first, second]).requires_grad_()  # detached by greedy_batch
    results = decoder.greedy_batch(batch, torch.tensor([8, 5]), ALPHABET)
    assert [r.text for r in results] == ["cat", "do"]
    assert results[0].timesteps == (1, 3, 5)
    assert results[1].timesteps == (0, 3)
    assert results[0] == decoder.greedy(first, 8, ALPHABET)
    assert decoder.greedy_batch(batch[:0], torch.tensor([], dtype=torch.int64), ALPHABET) == []
    half = decoder.greedy_batch(batch.detach().half(), torch.tensor([8, 8]), ALPHABET)
    assert [r.text for r in half] == ["cat", "dog"]


def test_incremental_decoding_equals_decoding_at_once() -> None:
    log_probs = frames("hh_ee_l_ll__oo w")
    whole = decoder.greedy(log_probs, len(log_probs), ALPHABET)
    for cuts in ([1], [2, 5], [3, 4, 9, 10], list(range(1, len(log_probs)))):
        state = decoder.GreedyDecoder(ALPHABET)
        for start, end in zip([0, *cuts], [*cuts, len(log_probs)], strict=True):
            state.extend(log_probs[start:end])  # a repeat split across two pieces still merges
        got = state.result()
        assert (got.text, got.labels, got.timesteps) == (whole.text, whole.labels, whole.timesteps), cuts
        assert got.confidence == pytest.approx(whole.confidence, rel=1e-5)
    assert whole.text == "hello w"
