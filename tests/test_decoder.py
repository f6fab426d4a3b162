from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harken import decoder
from harken.alphabet import Alphabet
from harken.scorer import ScorerError

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


# --- beam search --------------------------------------------------------------------------------------

LDC = "she had your dark suit in greasy wash water all year"


def noisy(text: str, swaps: dict[int, str]) -> torch.Tensor:
    """Log-probs spelling ``text`` (a frame per character, a blank between), where at each position of
    ``swaps`` a wrong character is a little likelier than the right one."""
    rows = []
    for index, ch in enumerate(text):
        probs = torch.full((ALPHABET.n_classes,), 0.01)
        if index in swaps:
            probs[ALPHABET.encode(swaps[index])[0]], probs[ALPHABET.encode(ch)[0]] = 0.5, 0.4
        else:
            probs[ALPHABET.encode(ch)[0]] = 0.9
        blank = torch.full((ALPHABET.n_classes,), 0.01)
        blank[BLANK] = 0.9
        rows += [probs / probs.sum(), blank / blank.sum()]
    return torch.stack(rows).log()


NOISY = noisy(LDC, {11: "o", 22: "e", 31: "i"})  # "youo", "suite", "greasi"


@pytest.fixture(scope="module")
def scorer() -> decoder.Scorer:
    return decoder.Scorer(DATA / "pruned_lm.scorer", ALPHABET)


def test_scorer_turns_a_noisy_greedy_path_into_the_sentence(scorer: decoder.Scorer) -> None:
    assert (
        decoder.greedy(NOISY, len(NOISY), ALPHABET).text
        == "she had youo dark suitein greasi wash water all year"
    )
    best = decoder.Decoder(ALPHABET, decoder.BeamSettings(beam_width=100), scorer).decode(NOISY)[0]
    assert best.text == LDC
    assert ALPHABET.decode(best.labels) == LDC and len(best.timesteps) == len(LDC)
    assert list(best.timesteps) == sorted(best.timesteps) and best.timesteps[0] == 0
    without = decoder.Decoder(ALPHABET, decoder.BeamSettings(beam_width=100)).decode(NOISY)[0]
    assert without.text == "she had youo dark suitein greasi wash water all year"  # no LM: the acoustics win


def test_beam_search_without_scorer_agrees_with_greedy_on_clear_frames() -> None:
    log_probs = frames("_hh_e_l_ll_oo__ _w_o_r_l_d_")
    beam = decoder.Decoder(ALPHABET, decoder.BeamSettings(beam_width=16)).decode(log_probs)[0]
    assert beam.text == decoder.greedy(log_probs, len(log_probs), ALPHABET).text == "hello world"


def test_width_one_without_scorer_is_greedy() -> None:
    greedy = decoder.Decoder(ALPHABET, decoder.BeamSettings(beam_width=1))
    assert greedy.greedy and isinstance(greedy.stream(), decoder.GreedyDecoder)
    assert greedy.decode(NOISY)[0] == decoder.greedy(NOISY, len(NOISY), ALPHABET)


def test_n_best_are_distinct_and_ranked(scorer: decoder.Scorer) -> None:
    search = decoder.Decoder(ALPHABET, decoder.BeamSettings(beam_width=100), scorer)
    candidates = search.decode(NOISY, n_best=5)
    assert len(candidates) == 5 and candidates[0].text == LDC
    assert len({c.text for c in candidates}) == 5
    assert search.decode(NOISY, n_best=1)[0] == candidates[0]


def test_streaming_beam_search_equals_whole(scorer: decoder.Scorer) -> None:
    settings = decoder.BeamSettings(beam_width=50)
    whole = decoder.Decoder(ALPHABET, settings, scorer).decode(NOISY, n_best=3)
    stream = decoder.BeamDecoder(ALPHABET, settings, scorer)
    partials = []
    for start in range(0, len(NOISY), 7):
        stream.extend(NOISY[start : start + 7])
        partials.append(stream.result().text)
    assert stream.finish(3) == whole
    assert partials[-1].startswith("she had your dark suit") and partials[0] == ""
    with pytest.raises(RuntimeError, match="finished"):
        stream.extend(NOISY[:1])


def test_hot_words_boost_and_suppress(scorer: decoder.Scorer) -> None:
    def best(hot: dict[str, float]) -> str:
        settings = decoder.BeamSettings(beam_width=100, hot_words=hot)
        return decoder.Decoder(ALPHABET, settings, scorer).decode(NOISY)[0].text

    assert best({}) == LDC
    assert "greasi" not in best({"greasi": 1.0})  # not enough to beat the LM
    assert best({"suite": 25.0}).startswith("she had your dark suite in")  # a word the vocabulary lacks
    assert "water" not in best({"water": -30.0}).split()


def test_hot_phrases_with_a_scorer_boost_only_whole_phrases(scorer: decoder.Scorer) -> None:
    def best(hot: dict[str, float]) -> str:
        settings = decoder.BeamSettings(beam_width=100, hot_words=hot)
        return decoder.Decoder(ALPHABET, settings, scorer).decode(NOISY)[0].text

    assert "dark suite in greasy" in best({"dark suite in": 10.0})  # "suite": outside the vocabulary
    assert best({"dark suite out": 10.0}) == LDC  # "dark suite" then "in": the credit is taken back
    assert best({"suite out": 10.0}) == LDC
    suppressed = best({"wash water": -30.0})
    assert "wash water" not in suppressed and suppressed != LDC
    assert best({"wash soap": -30.0}) == LDC  # a phrase that is not there changes nothing
    assert best({"suite in": -30.0}) == LDC  # to avoid: its unknown word "suite" is not made spellable
    with pytest.raises(ValueError, match="hot word 'suit': boost nan"):
        decoder.BeamSettings(hot_words={"suit": float("nan")})
    with pytest.raises(ValueError, match="hot word ' ': expected a word or phrase"):
        decoder.BeamSettings(hot_words={" ": 1.0})
    assert decoder.BeamSettings(hot_words={" dark  suit ": 1}).hot_words == {"dark suit": 1.0}


def test_hot_phrases_without_a_scorer() -> None:
    def best(hot: dict[str, float], width: int = 16) -> str:
        settings = decoder.BeamSettings(beam_width=width, hot_words=hot)
        return decoder.Decoder(ALPHABET, settings).decode(NOISY)[0].text

    plain = "she had youo dark suitein greasi wash water all year"
    assert best({}) == plain
    assert "greasy wash" in best({"greasy wash": 2.0})
    assert "your dark" in best({"your dark": 2.0}) and "greasi" in best({"your dark": 2.0})
    assert best({"greasy soap": 2.0}) == plain  # it diverges at "w": the credit of "greasy " is taken back
    assert "greasy wash" in best({"greasy": 2.0})
    assert "dark suit in" in best({"suit": 1.0})  # a word boundary must follow the phrase: " " over "e"
    assert best({"wash": -20.0}) != plain and " wash " not in best({"wash": -20.0})
    assert best({"greasy wash": 2.0}, width=1) == best({"greasy wash": 2.0}, width=16)  # never greedy
    with pytest.raises(ScorerError, match="hot word 'café': the model's alphabet cannot spell"):
        decoder.Decoder(ALPHABET, decoder.BeamSettings(hot_words={"café": 1.0}))


@pytest.mark.parametrize("with_scorer", [False, True])
def test_a_stream_with_hot_phrases_ends_as_the_whole_file(scorer: decoder.Scorer, with_scorer: bool) -> None:
    hot = {"dark suite in": 10.0, "greasy wash": 3.0, "wash soap": 5.0}
    settings = decoder.BeamSettings(beam_width=50, hot_words=hot)
    chosen = scorer if with_scorer else None
    whole = decoder.Decoder(ALPHABET, settings, chosen).decode(NOISY, n_best=3)
    assert "dark suite in greasy wash" in whole[0].text and "soap" not in whole[0].text
    for step in (1, 7, 40):
        stream = decoder.Decoder(ALPHABET, settings, chosen).stream()
        for start in range(0, len(NOISY), step):
            stream.extend(NOISY[start : start + step])
            stream.result()  # partials on the way change nothing
        assert stream.finish(3) == whole


def test_written_phrases_keep_to_what_the_search_could_write(scorer: decoder.Scorer) -> None:
    """Found by review: partials at a stream's start crashed with a scorer; a phrase cut a word and left a
    piece the vocabulary lacks ("d ark"); a boost brought back a phrase to avoid; a phrase already
    transcribed lost its timings."""
    live = decoder.BeamDecoder(ALPHABET, decoder.BeamSettings(beam_width=16, hot_words={"she": 2.0}), scorer)
    for t in range(len(NOISY)):
        live.extend(NOISY[t : t + 1])
        live.result()
    assert live.finish()[0].text == LDC

    def best(hot: dict[str, float], chosen: decoder.Scorer | None = scorer) -> decoder.Decoded:
        return decoder.Decoder(ALPHABET, decoder.BeamSettings(beam_width=50, hot_words=hot), chosen).decode(
            NOISY
        )[0]

    for boost in (5.0, 20.0, 60.0):
        words = best({"ark": boost}).text.split()
        assert all(scorer.knows(word) or word == "ark" for word in words), words
    for chosen in (scorer, None):
        assert " wash water " not in f" {best({'wash water': -30.0, 'water': 3.0}, chosen).text} "
        plain, boosted = best({}, chosen), best({"dark": 1.0}, chosen)
        assert "dark" in plain.text.split() and boosted.text == plain.text
        assert boosted.timesteps == plain.timesteps


def test_alpha_and_beta_change_the_outcome(scorer: decoder.Scorer) -> None:
    def best(alpha: float, beta: float) -> str:
        settings = decoder.BeamSettings(beam_width=100, alpha=alpha, beta=beta)
        return decoder.Decoder(ALPHABET, settings, scorer).decode(NOISY)[0].text

    assert best(0.75, 1.85) == LDC
    assert best(0.0, 0.0) == LDC  # no LM weight: the vocabulary alone rules out "youo"
    assert best(0.75, -10.0) == LDC.replace(" in ", " ")  # words cost: the short weak one goes
    assert len(best(0.75, 10.0).split()) > 20  # words pay: many short ones
    assert best(20.0, 0.0) == ""  # the LM's cost of any word outweighs the acoustics


def test_cutoff_prob_keeps_the_likeliest_labels() -> None:
    log_probs = frames("ab_").numpy()
    pruned = decoder._pruned(log_probs, 0.5)
    assert (pruned > -1e29).sum(axis=1).tolist() == [1, 1, 1]  # 0.9 of the mass in one label
    assert (decoder._pruned(log_probs, 0.95) > -1e29).sum(axis=1).min() > 1
    assert decoder._pruned(log_probs, 1.0) is log_probs
    with pytest.raises(ValueError, match="cutoff_prob"):
        decoder.BeamSettings(cutoff_prob=0.0)


def test_the_default_beam_is_500_with_a_scorer_and_16_without() -> None:
    """--beam_width 0 (the default): DeepSpeech's 500 with a scorer; 16 without, where wider searches
    found nothing more (bench/beam_default.py); a width given is kept either way."""
    from harken.config import BEAM_WITH_SCORER, BEAM_WITHOUT_SCORER, DecoderConfig
    from harken.decoder import settings_from
    from harken.scorer import Scorer

    scorer = Scorer(DATA / "pruned_lm.scorer", Alphabet.default())
    automatic = settings_from(DecoderConfig())
    assert (
        (automatic.width(None), automatic.width(scorer))
        == (BEAM_WITHOUT_SCORER, BEAM_WITH_SCORER)
        == (16, 500)
    )
    given = settings_from(DecoderConfig(beam_width=64))
    assert given.width(None) == given.width(scorer) == 64
    assert (
        not decoder.Decoder(Alphabet.default(), automatic).greedy
        and decoder.Decoder(Alphabet.default(), decoder.BeamSettings(1)).greedy
    )
