from pathlib import Path

import pytest

from harken.alphabet import Alphabet
from harken.language_model import LmConfig, build
from harken.scorer import Scorer, ScorerError, parse_hot_words, read_info, set_defaults

from conftest import DATA

ENGLISH = Alphabet.default()


def test_deepspeech_scorer_loads_as_it_is() -> None:
    scorer = Scorer(DATA / "pruned_lm.scorer", ENGLISH)
    assert (scorer.alpha, round(scorer.beta, 6)) == (0.75, 1.85)
    assert set(scorer.vocabulary[:-1]) == set((DATA / "vocab.pruned.txt").read_text().split())
    assert scorer.vocabulary[-1] == "<unk>"


def test_scorer_for_another_alphabet_is_refused(tmp_path: Path) -> None:
    russian = Alphabet.from_file(DATA / "alphabet.ru")
    with pytest.raises(ScorerError, match="pruned_lm.scorer: built for another alphabet"):
        Scorer(DATA / "pruned_lm.scorer", russian)
    shuffled = Alphabet([" ", *"zyxwvutsrqponmlkjihgfedcba", "'"])  # same size, other order
    with pytest.raises(ScorerError, match="built for another alphabet: its vocabulary read with"):
        Scorer(DATA / "pruned_lm.scorer", shuffled)
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat\n" * 5)
    build(LmConfig(text=(text,), output=tmp_path / "en.scorer", order=2), ENGLISH, lambda _: None)
    with pytest.raises(
        ScorerError, match="en.scorer: built for another alphabet: .* cannot spell 5 of its 5"
    ):
        Scorer(tmp_path / "en.scorer", russian)


def test_corrupt_scorer_is_one_line(tmp_path: Path) -> None:
    data = bytearray((DATA / "pruned_lm.scorer").read_bytes())
    data[0:20] = b"not a kenlm header!!"
    corrupt = tmp_path / "corrupt.scorer"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ScorerError, match="corrupt.scorer: KenLM cannot load its language model"):
        Scorer(corrupt, ENGLISH)


def test_set_defaults_rewrites_alpha_and_beta_only(tmp_path: Path) -> None:
    path = tmp_path / "copy.scorer"
    path.write_bytes((DATA / "pruned_lm.scorer").read_bytes())
    set_defaults(path, 1.25, 0.5)
    scorer = Scorer(path, ENGLISH)
    assert (scorer.alpha, scorer.beta) == (1.25, 0.5)
    assert scorer.vocabulary == Scorer(DATA / "pruned_lm.scorer", ENGLISH).vocabulary
    assert path.stat().st_size == (DATA / "pruned_lm.scorer").stat().st_size


def test_read_info_of_deepspeech_scorer_needs_the_alphabet() -> None:
    with pytest.raises(ScorerError, match="needs the model's alphabet"):
        read_info(DATA / "pruned_lm.scorer")


def test_hot_words() -> None:
    assert parse_hot_words("cat:10.5, dog:-2,") == {"cat": 10.5, "dog": -2.0}
    assert parse_hot_words("") == {}
    for bad in ("cat", "cat:x", ":3"):
        with pytest.raises(ScorerError, match="is not word:boost"):
            parse_hot_words(bad)
    scorer = Scorer(DATA / "pruned_lm.scorer", ENGLISH)
    with pytest.raises(ScorerError, match="hot word 'new york': one word"):
        scorer.search_parts({"new york": 3.0})
    with pytest.raises(ScorerError, match="hot word 'café'"):
        scorer.search_parts({"café": 3.0})
    _, _, words = scorer.search_parts({"harken": 5.0, "water": 2.0})
    assert words[-1] == "harken" and "water" in words[:-2]  # a new word comes after <unk>


def test_utf8_scorers_read_as_deepspeech_spells_them_and_are_refused(tmp_path: Path) -> None:
    """DeepSpeech's UTF-8 scorers (byte-output models: each character a word, no separator) store byte b
    as trie label b (its UTF8Alphabet's label b - 1, + 1); harken reads their vocabulary so, and says it
    cannot search with them (flashlight's lexicon search ends a word only at a separator token)."""
    from harken.alphabet import ByteAlphabet
    from harken.interop.scorer_package import trie_words

    text = tmp_path / "ru.txt"
    text.write_text("м а м а\nп а п а\n", encoding="utf-8")
    output = tmp_path / "utf8.scorer"
    build(LmConfig(text=(text,), output=output, order=2), None, lambda _: None)  # None: UTF-8 mode
    info = read_info(output, ByteAlphabet())
    assert info.utf8 and set(info.vocabulary) == {"м", "а", "п"}
    assert sorted(trie_words(output)) == sorted([(0xD0, 0xBC), (0xD0, 0xB0), (0xD0, 0xBF)])
    for alphabet in (ByteAlphabet(), ENGLISH):
        with pytest.raises(ScorerError, match=r"utf8.scorer: a UTF-8 scorer \(each character a word"):
            Scorer(output, alphabet)
