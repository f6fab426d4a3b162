from pathlib import Path

import numpy as np
import pytest

from harken.alphabet import Alphabet
from harken.interop.scorer_package import trie_words
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
    _, _, words = scorer.search_parts({"new  york": 3.0, "fiona walker": 1.0})  # phrases of words
    assert {"new", "york", "fiona", "walker"} <= set(words)
    with pytest.raises(ScorerError, match="hot word 'café'"):
        scorer.search_parts({"café": 3.0})
    _, _, words = scorer.search_parts({"harken": 5.0, "water": 2.0})
    assert words[-1] == "harken" and "water" in words[:-2]  # a new word comes after <unk>


def _frames(choices: list[dict[int, float]], n_classes: int) -> np.ndarray:
    """Log-probs [2 * len(choices), n_classes]: each choice's frame, then a frame of blank."""
    rows = []
    for choice in choices:
        for probabilities in (choice, {n_classes - 1: 1.0}):
            row = np.full(n_classes, 1e-6, np.float32)
            for label, p in probabilities.items():
                row[label] = p
            rows.append(np.log(row / row.sum()))
    return np.stack(rows)


def test_a_utf8_scorer_picks_the_characters_its_lm_knows(tmp_path: Path) -> None:
    """A byte-output model hears "мапа" a little more than "мама"; a UTF-8 scorer built from text that
    says "мама" scores each character as its last byte arrives and picks "мама"; a repeated byte is one
    byte (CTC), spaces pass unscored; hot words weigh characters."""
    from harken.alphabet import ByteAlphabet
    from harken.decoder import BeamSettings, Decoder

    text = tmp_path / "ru.txt"
    text.write_text("м а м а\n" * 5 + "п а п а\n", encoding="utf-8")
    output = tmp_path / "ru.scorer"
    build(LmConfig(text=(text,), output=output, order=3), None, lambda _: None)  # None: UTF-8 mode
    assert sorted(trie_words(output)) == [(0xD0, 0xB0), (0xD0, 0xBC), (0xD0, 0xBF)]  # DeepSpeech's labels
    bytes_ = ByteAlphabet()
    lead, m, p = bytes_.encode("м")[0], bytes_.encode("м")[1], bytes_.encode("п")[1]  # м d0 bc, п d0 bf
    choices = [{label: 1.0} for label in bytes_.encode("ма")]
    choices += [{lead: 1.0}, {m: 0.45, p: 0.55}, {bytes_.encode("а")[0]: 1.0}, {bytes_.encode("а")[1]: 1.0}]
    frames = _frames(choices, bytes_.n_classes)
    frames = np.concatenate([frames[:3], frames[2:]])  # the second byte of "м" over two frames: one byte
    assert Decoder(bytes_, BeamSettings(beam_width=1)).decode(frames)[0].text == "мапа"
    scorer = Scorer(output, bytes_)
    decoded = Decoder(bytes_, BeamSettings(), scorer).decode(frames)[0]
    assert decoded.text == "мама" and len(decoded.labels) == 8
    spaced = _frames([*choices[:4], {bytes_.encode(" ")[0]: 1.0}, *choices[4:]], bytes_.n_classes)
    assert Decoder(bytes_, BeamSettings(), scorer).decode(spaced)[0].text == "ма ма"
    hot = Decoder(bytes_, BeamSettings(hot_words={"п": 6.0}), scorer).decode(frames)[0]
    assert hot.text == "мапа"
    with pytest.raises(ScorerError, match="a UTF-8 scorer's words are single characters"):
        Decoder(bytes_, BeamSettings(hot_words={"мама": 5.0}), scorer)
    with pytest.raises(ScorerError, match="ru.scorer: a UTF-8 scorer"):
        Scorer(output, ENGLISH)
