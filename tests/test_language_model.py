import gzip
from pathlib import Path

import pytest

from harken import language_model
from harken.alphabet import Alphabet
from harken.interop.scorer_package import trie_words
from harken.language_model import LmConfig, ToolError, build
from harken.scorer import Scorer, ScorerError, read_info

from conftest import DATA

ENGLISH = Alphabet.default()


@pytest.fixture(scope="module")
def vocab_scorer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-gram scorer built from DeepSpeech's smoke-test text."""
    output = tmp_path_factory.mktemp("lm") / "vocab.scorer"
    build(LmConfig(text=(DATA / "vocab.txt",), output=output), ENGLISH, log=lambda _: None)
    return output


def test_build_writes_a_scorer_with_its_metadata(vocab_scorer: Path) -> None:
    info = read_info(vocab_scorer)
    words = (DATA / "vocab.txt").read_text().split()
    assert set(info.vocabulary) == set(words) and info.vocabulary[0] == "the"  # most frequent first
    assert info.alphabet == ENGLISH.symbols and info.order == 5 and not info.utf8
    assert (info.alpha, info.beta) == (LmConfig.default_alpha, LmConfig.default_beta)
    assert info.built["running_words"] == len(words) and info.built["lowercase"] is True
    scorer = Scorer(vocab_scorer, ENGLISH)
    assert len(scorer.vocabulary) == len(set(words)) + 1  # and <unk>
    # The trie DeepSpeech would read spells the same words, each ending with the space label.
    spelled = {ENGLISH.decode(label - 1 for label in word) for word in trie_words(vocab_scorer)}
    assert spelled == {word + " " for word in info.vocabulary}


def test_top_k_gz_text_csv_transcripts_and_lowercasing(tmp_path: Path) -> None:
    text = tmp_path / "text.txt.gz"
    with gzip.open(text, "wt", encoding="utf-8") as out:
        out.write("The cat sat\nthe CAT ran\n\nthe dog\n")
    output = tmp_path / "small.scorer"
    build(
        LmConfig(text=(text, DATA / "LDC93S1.csv"), output=output, order=3, top_k=2), ENGLISH, lambda _: None
    )
    assert read_info(output).vocabulary == ("the", "cat")


def test_punctuation_and_capitals_are_read_as_the_words_they_surround(tmp_path: Path) -> None:
    """Ordinary prose builds the scorer its plain words build: "Oven." is "oven", "(cat" is "cat", "don't"
    keeps its apostrophe (the alphabet has one); a byte-order mark is not a character of the first word."""
    plain = tmp_path / "plain.txt"
    plain.write_text("turn on the oven\nthe cat don't sit on the oven\nopen the door and the oven\n")
    prose = tmp_path / "prose.txt"
    prose.write_text(
        '\ufeffTurn on the Oven.\nThe (cat) don\'t sit on the oven!\n"Open the door, and the oven..."\n',
        encoding="utf-8",
    )
    infos, scorers = [], []
    for text in (plain, prose):
        output = tmp_path / f"{text.stem}.scorer"
        build(LmConfig(text=(text,), output=output, order=2), ENGLISH, lambda _: None)
        infos.append(read_info(output))
        scorers.append(Scorer(output, ENGLISH))
    assert infos[0].vocabulary == infos[1].vocabulary and "don't" in infos[1].vocabulary
    sentence = ["open", "the", "oven", "and", "the", "cat"]
    assert scorers[0].log10(sentence) == scorers[1].log10(sentence)


def test_bad_text_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ScorerError, match="empty.txt: the text has no words"):
        build(LmConfig(text=(empty,), output=tmp_path / "x.scorer"), ENGLISH, lambda _: None)
    russian = tmp_path / "russian.txt"
    russian.write_text("мама мыла раму\nи папа тоже\n", encoding="utf-8")
    with pytest.raises(
        ScorerError, match=r"russian.txt: 100% of the words have characters outside the alphabet"
    ):
        build(LmConfig(text=(russian,), output=tmp_path / "x.scorer"), ENGLISH, lambda _: None)
    with pytest.raises(ScorerError, match="missing.txt: no such text file"):
        build(
            LmConfig(text=(tmp_path / "missing.txt",), output=tmp_path / "x.scorer"), ENGLISH, lambda _: None
        )
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(ScorerError, match="binary.txt: not UTF-8 text"):
        build(LmConfig(text=(binary,), output=tmp_path / "x.scorer"), ENGLISH, lambda _: None)
    assert not (tmp_path / "x.scorer").exists()


def test_a_few_foreign_words_are_left_out_not_refused(tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat " * 30 + "café\n", encoding="utf-8")
    lines: list[str] = []
    build(LmConfig(text=(text,), output=tmp_path / "x.scorer", order=2), ENGLISH, lines.append)
    assert "café" not in read_info(tmp_path / "x.scorer").vocabulary
    assert any("left out: 1 words with 'é'" in line for line in lines)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="--order 7: must be 1 to 6"):
        LmConfig(text=(), output=Path("x"), order=7)
    with pytest.raises(ValueError, match="--prune"):
        LmConfig(text=(), output=Path("x"), prune=(1, 1))


def test_missing_tools_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("HARKEN_KENLM_BIN", raising=False)
    monkeypatch.setattr(language_model.sys, "prefix", str(tmp_path))
    with pytest.raises(ToolError, match="run `harken lm setup` once"):
        language_model.find_tools()


def test_utf8_scorers_have_characters_for_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--bytes_output_mode: DeepSpeech's UTF-8 scorer (its Mandarin setup): every character but whitespace
    is a word of the LM, and the trie spells each by its UTF-8 byte values, as DeepSpeech's reads them."""
    from harken import cli
    from harken.alphabet import ByteAlphabet

    text = tmp_path / "ru.txt"
    text.write_text("мама мыла раму\nмама мыла раму\nпапа пил чай\n", encoding="utf-8")
    output = tmp_path / "ru.scorer"
    assert cli.main(["lm", "build", "--text", str(text), "--output", str(output), "--bytes_output_mode",
                     "--order", "3"]) == 0  # fmt: skip
    info = read_info(output)
    assert info.utf8 and info.alphabet is None and info.order == 3
    assert info.vocabulary[0] == "а" and set(info.vocabulary) == set("мамылрупилчй")
    assert sorted(trie_words(output)) == sorted(tuple(char.encode("utf-8")) for char in info.vocabulary)
    Scorer(output, ByteAlphabet())  # loads for a byte-output model ...
    with pytest.raises(ScorerError, match=r"ru.scorer: a UTF-8 scorer \(each character a word\), for"):
        Scorer(output, ENGLISH)  # ... and not for an alphabet
    capsys.readouterr()
    argv = ["lm", "build", "--text", str(text), "--output", str(output), "--bytes_output_mode"]
    assert cli.main([*argv, "--alphabet_config_path", str(DATA / "alphabet.ru")]) == 2
    assert "--bytes_output_mode builds a scorer of characters" in capsys.readouterr().err
