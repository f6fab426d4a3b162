"""The external scorer: a KenLM n-gram model plus its vocabulary, weighted by alpha and beta.

A ``.scorer`` file is DeepSpeech's package layout (see :mod:`harken.interop.scorer_package`), so
DeepSpeech and Coqui STT scorers load as they are and harken writes its own in the same layout.
:class:`Scorer` turns one into what the beam search needs: flashlight-text's KenLM over the vocabulary,
and the vocabulary as a trie of spellings (each word's labels and then the space, as DeepSpeech's trie had)
whose nodes carry the best unigram score below them, so a half-spelled word is already weighed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harken import __version__
from harken.alphabet import Alphabet, ByteAlphabet
from harken.interop import scorer_package
from harken.phrases import boosted_word_lm, word_graph
from harken.storage import atomic_write

FORMAT = "harken-scorer"
FORMAT_VERSION = 1
UNKNOWN = "<unk>"
LN10 = math.log(10.0)  # KenLM scores are log10; DeepSpeech's alpha weighs natural logs


class ScorerError(ValueError):
    """A scorer that cannot be built, read or used with this model; one line that names the file."""


@dataclass(frozen=True)
class ScorerInfo:
    alpha: float  # default LM weight
    beta: float  # default word insertion bonus
    utf8: bool
    vocabulary: tuple[str, ...]
    alphabet: tuple[str, ...] | None = None  # what it was built with (None: a DeepSpeech scorer)
    order: int | None = None
    built: Mapping[str, Any] = field(default_factory=dict)
    alpha_offset: int = 0  # where the defaults are stored in the file


def spelling(word: str, alphabet: Alphabet) -> list[int]:
    """A word's trie labels in character mode: its alphabet ids, then the space that ends it."""
    return [*alphabet.encode(word), alphabet.encode(" ")[0]]


def write_scorer(output: Path, lm_binary: Path, info: ScorerInfo) -> None:
    """KenLM binary + DeepSpeech's trie header and vocabulary FST + harken's metadata, atomically."""
    if info.utf8:
        words = [list(word.encode("utf-8")) for word in info.vocabulary]  # byte b: label b - 1, stored + 1
    else:
        alphabet = Alphabet(info.alphabet or ())
        words = [[label + 1 for label in spelling(word, alphabet)] for word in info.vocabulary]
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "harken_version": __version__,
        "alphabet": list(info.alphabet) if info.alphabet is not None else None,
        "order": info.order,
        "built": dict(info.built),
        "vocabulary": list(info.vocabulary),
    }
    extra = json.dumps(metadata, ensure_ascii=False).encode("utf-8")
    lm_size = lm_binary.stat().st_size
    tail = scorer_package.package_bytes(lm_size, words, info.utf8, info.alpha, info.beta, extra)
    with atomic_write(output, "wb") as out, open(lm_binary, "rb") as model:
        shutil.copyfileobj(model, out)
        out.write(tail)


def _deepspeech_vocabulary(path: Path, package: scorer_package.Package, alphabet: Alphabet) -> list[str]:
    """A DeepSpeech trie's words (labels are alphabet ids + 1, each word ending with the space)."""
    if package.utf8:
        return [bytes(word).decode("utf-8", "replace") for word in package.words]  # labels are the bytes
    space = alphabet.encode(" ")[0] + 1 if " " in alphabet.symbols else None
    largest = max((max(word) for word in package.words if word), default=0)
    if largest > len(alphabet):
        raise ScorerError(
            f"{path}: built for another alphabet (its vocabulary uses label {largest - 1}; "
            f"the model's alphabet has {len(alphabet)} labels)"
        )
    words = []
    for word in package.words:
        labels = list(word[:-1] if word and word[-1] == space else word)
        words.append(alphabet.decode(label - 1 for label in labels))
    return words


def read_info(path: Path, alphabet: Alphabet | None = None) -> ScorerInfo:
    """What a scorer holds; a DeepSpeech scorer's vocabulary is read through ``alphabet``."""
    package = scorer_package.read(path)
    if not package.extra:
        if alphabet is None:
            raise ScorerError(
                f"{path}: a DeepSpeech scorer: its vocabulary needs the model's alphabet to read"
            )
        words = _deepspeech_vocabulary(path, package, alphabet)
        return ScorerInfo(
            package.alpha, package.beta, package.utf8, tuple(words), alpha_offset=package.alpha_offset
        )
    try:
        meta = json.loads(package.extra)
        if meta.get("format") != FORMAT:
            raise ValueError("not a harken scorer")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ScorerError(
                f"{path}: scorer format {meta['format_version']} is newer than this harken reads "
                f"({FORMAT_VERSION}); upgrade harken"
            )
        return ScorerInfo(
            alpha=package.alpha,
            beta=package.beta,
            utf8=package.utf8,
            vocabulary=tuple(meta["vocabulary"]),
            alphabet=tuple(meta["alphabet"]) if meta.get("alphabet") is not None else None,
            order=meta.get("order"),
            built=meta.get("built", {}),
            alpha_offset=package.alpha_offset,
        )
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, ScorerError):
            raise
        raise ScorerError(f"{path}: damaged harken metadata in the scorer ({error})") from None


def set_defaults(path: Path, alpha: float, beta: float) -> None:
    """Store a new default alpha and beta in the scorer (16 bytes rewritten in place)."""
    package = scorer_package.read(path)
    try:
        with open(path, "r+b") as file:
            os.pwrite(file.fileno(), struct.pack("<dd", alpha, beta), package.alpha_offset)
    except OSError as error:
        raise ScorerError(f"{path}: cannot store the new alpha and beta ({error.strerror})") from None


_PENDING = 1 << 28  # LM state keys (C ints) of part-spelled characters: past KenLM's word ids (-1: </s>)
_DEAD = 1 << 30


def _character_lm(
    kenlm: Any, units: dict[bytes, int], alpha: float, beta: float, boosts: dict[int, float], space: int
) -> Any:
    """DeepSpeech's UTF-8 scoring as a flashlight LM over byte labels (byte b is label b - 1): a label that
    completes a character the vocabulary holds scores ``alpha * (ln P + boost) + beta``; one that leaves a
    part of such a character scores 0; anything else is impossible. A space between characters is left
    unscored (DeepSpeech's trie had none). Scores come back weighted: the search's LM weight is 1."""
    from flashlight.lib.text.decoder import LM

    prefixes = {unit[:cut] for unit in units for cut in range(1, len(unit))}
    impossible = -1e9

    class CharacterLM(LM):
        def __init__(self) -> None:
            super().__init__()
            self.parts: dict[Any, tuple[Any, bytes]] = {}  # state -> (KenLM state, bytes spelled so far)
            self.dead: Any = None  # the one state of every impossible spelling

        def _known(self, state: Any, base: Any, pending: bytes) -> Any:
            self.parts.setdefault(state, (base, pending))
            return state

        def start(self, start_with_nothing: bool) -> Any:
            state = kenlm.start(start_with_nothing)
            return self._known(state, state, b"")

        def score(self, state: Any, label: int) -> tuple[Any, float]:
            base, pending = self.parts[state]
            if label == space and not pending:
                return state, 0.0
            pending += bytes([label + 1])
            unit = units.get(pending)
            if unit is not None:
                out, log10 = kenlm.score(base, unit)
                return self._known(out, out, b""), alpha * (log10 * LN10 + boosts.get(unit, 0.0)) + beta
            if pending in prefixes:
                return self._known(base.child(_PENDING + int.from_bytes(pending, "big")), base, pending), 0.0
            if self.dead is None:
                self.dead = self._known(base.child(_DEAD), base, b"\xff")
            return self.dead, impossible

        def finish(self, state: Any) -> tuple[Any, float]:
            base, pending = self.parts[state]
            out, log10 = kenlm.finish(base)
            return self._known(out, out, b""), alpha * log10 * LN10 if not pending else impossible

    return CharacterLM()


class Scorer:
    """A scorer loaded for one alphabet: the LM, the word list and the spelling trie for the search.

    ``words[i]`` is the text of the decoder's word ``i``; the last entry of the vocabulary part is
    ``<unk>`` (KenLM's unknown word), hot words outside the vocabulary come after it."""

    def __init__(self, path: str | Path, alphabet: Alphabet) -> None:
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        self.path = Path(path)
        self.alphabet = alphabet
        self.info = read_info(self.path, alphabet)
        self.utf8 = self.info.utf8  # its words are characters, each scored as its last byte arrives
        if self.utf8 and not isinstance(alphabet, ByteAlphabet):
            raise ScorerError(
                f"{self.path}: a UTF-8 scorer (each character a word), for --bytes_output_mode models; this "
                "model's output is an alphabet"
            )
        if " " not in alphabet.symbols:
            raise ScorerError(f"{self.path}: the model's alphabet has no space, so it has no words to score")
        self.alpha, self.beta = self.info.alpha, self.info.beta
        spellable = [word for word in self.info.vocabulary if word and not alphabet.unknown(word)]
        if self.utf8:  # DeepSpeech scores single code points in this mode: other entries never match
            spellable = [word for word in spellable if len(word) == 1 and not word.isspace()]
        if len(spellable) < 0.95 * len(self.info.vocabulary) or not spellable:
            missing = sorted({c for word in self.info.vocabulary for c in alphabet.unknown(word)})[:10]
            raise ScorerError(
                f"{self.path}: built for another alphabet: the model's alphabet cannot spell "
                f"{len(self.info.vocabulary) - len(spellable):,} of its {len(self.info.vocabulary):,} words "
                f"(characters {''.join(missing)!r})"
            )
        self.vocabulary = [*spellable, UNKNOWN]
        try:
            self.kenlm = KenLM(str(self.path), Dictionary(self.vocabulary))
        except RuntimeError as error:
            raise ScorerError(f"{self.path}: KenLM cannot load its language model ({error})") from None
        self._check_vocabulary()
        self._tries: dict[tuple[tuple[str, float], ...], tuple[Any, Any, list[str]]] = {}
        self._unigram_scores: list[float] | None = None
        self._index: dict[str, int] | None = None

    def _unigrams(self) -> list[float]:
        """Each vocabulary word's score after <s> (the trie's look-ahead), computed once."""
        if self._unigram_scores is None:
            start = self.kenlm.start(False)
            self._unigram_scores = [self.kenlm.score(start, i)[1] for i in range(len(self.vocabulary))]
        return self._unigram_scores

    def _check_vocabulary(self) -> None:
        """A DeepSpeech trie read through the wrong alphabet spells words the LM has never seen."""
        start = self.kenlm.start(False)
        unknown = self.kenlm.score(start, len(self.vocabulary) - 1)[1]
        sample = range(0, len(self.vocabulary) - 1, max(1, (len(self.vocabulary) - 1) // 200))
        known = sum(self.kenlm.score(start, index)[1] != unknown for index in sample)
        if known < 0.5 * len(sample):
            raise ScorerError(
                f"{self.path}: built for another alphabet: its vocabulary read with the model's alphabet "
                "gives words its language model does not know"
            )

    def character_lm(self, hot_words: Mapping[str, float], alpha: float, beta: float) -> Any:
        """A UTF-8 scorer's LM for flashlight's lexicon-free search (one per search: it keeps its states)."""
        boosts: dict[int, float] = {}
        for word, boost in hot_words.items():
            if len(word) != 1 or word.isspace() or word not in self.vocabulary:
                raise ScorerError(f"hot word {word!r}: a UTF-8 scorer's words are single characters it knows")
            boosts[self.vocabulary.index(word)] = boost
        units = {word.encode("utf-8"): index for index, word in enumerate(self.vocabulary[:-1])}
        return _character_lm(self.kenlm, units, alpha, beta, boosts, self.alphabet.encode(" ")[0])

    def check_hot_words(self, hot_words: Mapping[str, float]) -> None:
        """ScorerError when a hot word cannot be used with this scorer."""
        if self.utf8:
            self.character_lm(hot_words, self.alpha, self.beta)
        else:  # boosts are spotted beside the search (phrase_writer.spotting checks their spelling);
            avoided = {phrase: boost for phrase, boost in hot_words.items() if boost < 0}
            self.search_parts(avoided)  # builds (and keeps) the trie the first search will use

    def _indices(self) -> dict[str, int]:
        if self._index is None:
            self._index = {word: position for position, word in enumerate(self.vocabulary[:-1])}
        return self._index

    def knows(self, word: str) -> bool:
        """Whether ``word`` is in the vocabulary (the search can spell it)."""
        return word in self._indices()

    def log10(self, words: Sequence[str], context: int = 0, begins: bool = True, ends: bool = True) -> float:
        """The LM's log10 probability of ``words`` (outside the vocabulary as <unk>) as the search scores
        them: the first ``context`` are only context; from <s> if ``begins``, to </s> if ``ends``."""
        index, unknown = self._indices(), len(self.vocabulary) - 1
        state, total = self.kenlm.start(not begins), 0.0
        for position, word in enumerate(words):
            state, score = self.kenlm.score(state, index.get(word, unknown))
            total += score if position >= context else 0.0
        return total + (self.kenlm.finish(state)[1] if ends else 0.0)

    def search_parts(self, hot_words: Mapping[str, float]) -> tuple[Any, Any, list[str]]:
        """(spelling trie, a maker of the search's LM, word texts) for a word scorer's beam search with
        these hot phrases. Each search needs its own LM (it keeps the phrases' states)."""
        from flashlight.lib.text.decoder import SmearingMode, Trie

        key = tuple(sorted(hot_words.items()))
        if key in self._tries:
            return self._tries[key]
        words = list(self.vocabulary)
        index = {word: position for position, word in enumerate(words)}
        to_lm = list(range(len(words)))
        boosts: dict[int, float] = {}
        sayable: dict[str, float] = {}
        for phrase, boost in hot_words.items():
            if not phrase.split() or self.alphabet.unknown(phrase):
                raise ScorerError(f"hot word {phrase!r}: words the model's alphabet can spell, please")
            if boost <= 0 and any(word not in index for word in phrase.split()):
                continue  # a phrase to avoid that the vocabulary cannot spell anyway: adding it would
            sayable[phrase] = boost  # make its words spellable
            for word in phrase.split():
                if word not in index:  # out of the scorer's vocabulary: spellable, scored as <unk>
                    index[word] = len(words)
                    words.append(word)
                    to_lm.append(len(self.vocabulary) - 1)  # KenLM's <unk>
                ahead = boost if len(phrase.split()) == 1 else max(boost, 0.0)  # a part may not complete
                boosts[index[word]] = max(boosts.get(index[word], ahead), ahead)
        graph = word_graph(sayable, index)
        kenlm = self.kenlm

        def make_lm() -> Any:
            return boosted_word_lm(kenlm, to_lm, graph, LN10) if sayable else kenlm

        unigrams = self._unigrams()
        space = self.alphabet.encode(" ")[0]
        trie = Trie(self.alphabet.n_classes, space)
        for position, word in enumerate(words):
            if word == UNKNOWN:
                continue
            score = unigrams[to_lm[position]] + boosts.get(position, 0.0) / LN10  # the look-ahead
            trie.insert(spelling(word, self.alphabet), position, score)
        trie.smear(SmearingMode.MAX)
        if len(self._tries) > 8:
            self._tries.clear()
        self._tries[key] = (trie, make_lm, words)
        return self._tries[key]


def parse_hot_words(text: str) -> dict[str, float]:
    """``"word:boost,word:boost"`` (DeepSpeech's --hot_words) -> {word: boost}."""
    hot: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        word, colon, boost = item.rpartition(":")
        try:
            if not colon or not word.strip():
                raise ValueError
            hot[" ".join(word.split())] = float(boost)
        except ValueError:
            raise ScorerError(f'--hot_words: {item!r} is not word:boost (e.g. "cat:10.5,dog:-2")') from None
    return hot
