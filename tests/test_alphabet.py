from pathlib import Path

import pytest

from harken.alphabet import Alphabet, AlphabetError

DATA = Path(__file__).parent / "data"


def test_deepspeech_english_alphabet_file() -> None:
    alphabet = Alphabet.from_file(DATA / "alphabet.txt")
    assert alphabet.symbols[0] == " "
    assert "".join(alphabet.symbols[1:27]) == "abcdefghijklmnopqrstuvwxyz"
    assert alphabet.symbols[-1] == "'"
    assert len(alphabet) == 28 and alphabet.blank == 28 and alphabet.n_classes == 29
    assert Alphabet.default() == alphabet


@pytest.mark.parametrize("name", ["alphabet_unix.txt", "alphabet_macos.txt", "alphabet_windows.txt"])
def test_line_endings(name: str) -> None:
    assert Alphabet.from_file(DATA / name).symbols == ("a", "b", "c")


def test_comments_and_escaped_hash(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("# comment\nx\n\\#\n \n", encoding="utf-8")
    assert Alphabet.from_file(path).symbols == ("x", "#", " ")


def test_encode_decode_round_trip() -> None:
    alphabet = Alphabet.default()
    labels = alphabet.encode("she's here")
    assert alphabet.decode(labels) == "she's here"
    assert alphabet.decode([*labels, alphabet.blank]) == "she's here"


def test_unknown_characters_are_named() -> None:
    alphabet = Alphabet.default()
    assert alphabet.unknown("Hello, wörld") == ["H", ",", "ö"]
    with pytest.raises(ValueError, match="'H,ö'"):
        alphabet.encode("Hello, wörld")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(AlphabetError, match="missing.txt"):
        Alphabet.from_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n")
    with pytest.raises(AlphabetError, match="no symbols"):
        Alphabet.from_file(empty)
    twice = tmp_path / "twice.txt"
    twice.write_text("a\nb\na\n")
    with pytest.raises(AlphabetError, match="twice.txt.*'a' appears twice"):
        Alphabet.from_file(twice)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("é\n".encode("latin-1"))
    with pytest.raises(AlphabetError, match="not UTF-8"):
        Alphabet.from_file(latin1)


def test_file_text_round_trip(tmp_path: Path) -> None:
    alphabet = Alphabet([" ", "#", "a"])
    path = tmp_path / "out.txt"
    path.write_text(alphabet.to_file_text(), encoding="utf-8")
    assert Alphabet.from_file(path) == alphabet


def test_alphabet_from_transcripts() -> None:
    from harken.alphabet import from_transcripts

    found, counts = from_transcripts(["ab a", "#ç b\n"])
    assert found.symbols == (" ", "#", "a", "b", "ç") and counts["a"] == 2 and counts[" "] == 2
    with pytest.raises(AlphabetError, match="no characters"):
        from_transcripts(["", "\n"])


def test_alphabet_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harken import cli

    csv = Path(__file__).parent / "data" / "LDC93S1.csv"
    assert cli.main(["alphabet", "--from", f"{csv},{csv}", "--output", str(tmp_path / "a.txt")]) == 0
    made = Alphabet.from_file(tmp_path / "a.txt")
    text = "she had your dark suit in greasy wash water all year"
    assert (
        made.decode(made.encode(text)) == text
        and made.symbols[0] == " "
        and len(made) == len(set(text)) == 17
    )
    assert "17 symbols in" in capsys.readouterr().err
    assert cli.main(["alphabet", "--from", str(tmp_path / "none.csv")]) == 2
    assert "none.csv: no such CSV file" in capsys.readouterr().err


def test_utf8_byte_mode() -> None:
    from harken.alphabet import ByteAlphabet

    alphabet = ByteAlphabet()
    assert alphabet.n_classes == 256 and alphabet.blank == 255 and len(alphabet) == 255
    text = "да 你好 é"
    labels = alphabet.encode(text)
    assert labels[:2] == [0xD0 - 1, 0xB4 - 1] and len(labels) == len(text.encode("utf-8"))
    assert alphabet.decode(labels) == text and alphabet.unknown(text) == []
    assert alphabet.decode(labels[:-1]) == "да 你好 "  # a cut-off character is dropped, not garbled
    assert alphabet.tokens(labels) == [(c, len(text[:i].encode("utf-8"))) for i, c in enumerate(text)]
    assert [t for t, _ in alphabet.tokens([0xB4 - 1, *labels])] == list(text)  # a stray continuation byte
    with pytest.raises(ValueError, match="NUL"):
        alphabet.encode("a\x00")
    assert Alphabet.from_serialized(alphabet.serialize()) == alphabet != Alphabet.default()
    assert Alphabet.from_serialized(Alphabet.default().serialize()) == Alphabet.default()
    assert (
        Alphabet.for_model(None, True) == alphabet and Alphabet.for_model(None, False) == Alphabet.default()
    )
    assert alphabet.symbols.index(" ") == 31  # the space is byte 32
