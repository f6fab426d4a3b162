"""Build a scorer from plain text: DeepSpeech's generate_lm.py and generate_scorer_package in one step.

text (.txt / .gz, one sentence per line, or CSV manifests' transcripts) -> word counts -> the ``top_k``
most frequent words the alphabet can spell -> ``lmplz`` (modified Kneser-Ney, pruned, limited to that
vocabulary) -> ``build_binary`` (quantised trie) -> a ``.scorer`` (see :mod:`harken.scorer`).

KenLM's ``lmplz`` and ``build_binary`` have no Debian package: :func:`install_tools` compiles them from
the ``kenlm`` source distribution on PyPI (cmake + Debian's boost development packages) into the
environment's ``bin`` folder, once.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harken import manifest
from harken.alphabet import Alphabet
from harken.config import comma_list, option, require
from harken.scorer import ScorerError, ScorerInfo, write_scorer

TOOLS = ("lmplz", "build_binary")
KENLM_VERSION = "0.3.0"
DEBIAN_PACKAGES = (
    "cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev "
    "libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev"
)
Log = Callable[[str], None]


class ToolError(RuntimeError):
    """KenLM's tools are missing or failed; one line."""


def paths(text: str) -> tuple[Path, ...]:
    """Comma-joined paths ("a.txt,b.csv") as paths."""
    return tuple(Path(part) for part in comma_list(text))


def prune_counts(text: str) -> tuple[int, ...]:
    """lmplz's pruning thresholds: "0 0 1" or DeepSpeech's "0|0|1"."""
    try:
        return tuple(int(part) for part in text.replace("|", " ").replace(",", " ").split())
    except ValueError:
        raise ValueError(f"expected counts like '0 0 1', got {text!r}") from None


@dataclass(frozen=True)
class LmConfig:
    """``harken lm build``'s options (DeepSpeech's generate_lm.py names and defaults where it had them)."""

    text: tuple[Path, ...] = option(
        (),
        "text: .txt or .gz, a sentence a line, or CSVs' transcripts; comma-joined",
        required=True,
        parse=paths,
        metavar="FILES",
    )
    output: Path = option(Path(), "the .scorer file to write", required=True)
    order: int = option(5, "n-gram order", aliases=("arpa_order",))
    top_k: int = option(500_000, "vocabulary: the most frequent words")
    prune: tuple[int, ...] = option(
        (0, 0, 1),
        "lmplz --prune: minimum count per order, e.g. '0 0 1' (drops singleton trigrams and up; the last "
        "value repeats)",
        aliases=("arpa_prune",),
        parse=prune_counts,
        metavar="COUNTS",
    )
    memory: str = option("25%", "memory lmplz may sort in (e.g. 25%%, 2G)", aliases=("max_arpa_memory",))
    default_alpha: float = option(0.931289039105002, "LM weight stored in the scorer")
    default_beta: float = option(1.1834137581510284, "word insertion bonus stored in the scorer")
    max_oov_fraction: float = option(
        0.05, "share of running words with characters outside the alphabet above which the text is refused"
    )
    alphabet_config_path: str = option(
        "", "the model's alphabet (default: English); words it cannot spell are left out"
    )
    bytes_output_mode: bool = option(
        False,
        "a UTF-8 scorer for --bytes_output_mode models: each character is a word of the LM (as "
        "DeepSpeech's Mandarin scorers); for a language with spaces, a word scorer built with "
        "--alphabet_config_path serves byte models too",
    )
    kenlm_bin: str = option(
        "",
        "the folder holding KenLM's lmplz and build_binary (default: $HARKEN_KENLM_BIN, else harken's "
        "environment, else PATH)",
    )
    lowercase: bool | None = None  # None: lowercase unless the alphabet has upper-case letters
    binary_type: str = option("trie", "build_binary's data structure", choices=("trie", "probing"))
    binary_q_bits: int = option(8, "build_binary -q: bits per quantised probability (trie)")
    binary_a_bits: int = option(255, "build_binary -a: bits of pointer compression (trie)")

    def __post_init__(self) -> None:
        require(1 <= self.order <= 6, "order", self.order, "1 to 6 (KenLM's limit here)")
        require(self.top_k >= 1, "top_k", self.top_k, "1 or more")
        require(
            all(count >= 0 for count in self.prune) and (not self.prune or self.prune[0] == 0),
            "prune", " ".join(map(str, self.prune)), "counts of 0 or more, the first (unigrams) 0",
        )  # fmt: skip
        require(0 <= self.max_oov_fraction <= 1, "max_oov_fraction", self.max_oov_fraction, "0 to 1")
        require(self.binary_type in ("trie", "probing"), "binary_type", self.binary_type, "trie or probing")
        require(1 <= self.binary_q_bits <= 25, "binary_q_bits", self.binary_q_bits, "1 to 25")
        require(0 <= self.binary_a_bits <= 255, "binary_a_bits", self.binary_a_bits, "0 to 255")
        for name in ("default_alpha", "default_beta"):
            require(math.isfinite(getattr(self, name)), name, getattr(self, name), "a finite number")
        require(not self.kenlm_bin or Path(self.kenlm_bin).is_dir(), "kenlm_bin", self.kenlm_bin, "a folder")
        if self.bytes_output_mode and self.alphabet_config_path:
            raise ValueError(
                "--bytes_output_mode builds a scorer of characters: give no --alphabet_config_path"
            )

    def alphabet(self) -> Alphabet | None:
        """The alphabet the scorer spells with; None: characters (--bytes_output_mode)."""
        return None if self.bytes_output_mode else Alphabet.load(self.alphabet_config_path or None)


# --- the tools -------------------------------------------------------------------------------------


def find_tools(folder: str = "") -> dict[str, Path]:
    """Paths of lmplz and build_binary (looked for in ``folder``, then the environment's bin, then PATH),
    or a ToolError that says how to get them."""
    found: dict[str, Path] = {}
    if folder:  # a folder given is the one to use: a tool missing there is an error, not a fallback
        missing = [tool for tool in TOOLS if not os.access(Path(folder) / tool, os.X_OK)]
        if missing:
            raise ToolError(f"--kenlm_bin {folder}: no {' or '.join(missing)} there (run `harken lm setup`)")
        return {tool: Path(folder) / tool for tool in TOOLS}
    for tool in TOOLS:
        local = Path(sys.prefix) / "bin" / tool  # where `harken lm setup` puts them
        on_path = local if local.is_file() and os.access(local, os.X_OK) else shutil.which(tool)
        if on_path:
            found[tool] = Path(on_path)
    missing = [tool for tool in TOOLS if tool not in found]
    if missing:
        raise ToolError(
            f"KenLM's {' and '.join(missing)} not found: run `harken lm setup` once to build them "
            "(or give --kenlm_bin, or set HARKEN_KENLM_BIN, to the folder that has them)"
        )
    return found


def _run(command: list[str], log: Log, what: str, stdin: bytes | None = None) -> None:
    result = subprocess.run(command, input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        detail = next((line for line in reversed(lines) if line.strip()), f"exit status {result.returncode}")
        raise ToolError(f"{what} failed: {detail.strip()}")


def install_tools(prefix: Path, log: Log, jobs: int | None = None) -> dict[str, Path]:
    """Compile lmplz and build_binary from the kenlm sdist on PyPI into ``prefix/bin``."""
    missing = [tool for tool in ("cmake", "g++", "make") if shutil.which(tool) is None]
    if missing or not Path("/usr/include/boost/program_options.hpp").exists():
        raise ToolError(f"building KenLM needs these Debian packages: apt-get install -y {DEBIAN_PACKAGES}")
    with tempfile.TemporaryDirectory(prefix="harken-kenlm-") as scratch:
        work = Path(scratch)
        log(f"fetching the kenlm {KENLM_VERSION} source distribution with pip")
        _run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
            + ["-d", str(work), f"kenlm=={KENLM_VERSION}"],
            log,
            "pip download kenlm",
        )
        archive = next(work.glob("kenlm-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        source = next(path for path in work.iterdir() if path.is_dir())
        build = source / "build"
        build.mkdir()
        log("compiling lmplz and build_binary (about a minute)")
        _run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"], log, "cmake")
        threads = str(jobs or os.cpu_count() or 1)
        _run(["make", "-C", str(build), f"-j{threads}", *TOOLS], log, "compiling KenLM")
        (prefix / "bin").mkdir(parents=True, exist_ok=True)
        for tool in TOOLS:
            shutil.copy2(build / "bin" / tool, prefix / "bin" / tool)
    log(f"installed {', '.join(TOOLS)} into {prefix / 'bin'}")
    return {tool: prefix / "bin" / tool for tool in TOOLS}


# --- the corpus ------------------------------------------------------------------------------------


def _lines(paths: tuple[Path, ...]) -> Iterator[str]:
    """The text's lines; a CSV manifest gives its transcripts."""
    for path in paths:
        if path.suffix.lower() == ".csv":
            yield from (sample.transcript for sample in manifest.read_csv(path))
            continue
        try:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as file:
                yield from file
        except FileNotFoundError:
            raise ScorerError(f"{path}: no such text file") from None
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
            raise ScorerError(f"{path}: not UTF-8 text ({error.__class__.__name__})") from None


def _punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


def words_of(line: str, alphabet: Alphabet, lowercase: bool) -> list[str]:
    """A line's words as the scorer gets them: lowercased when the alphabet has no capitals, without a
    UTF-8 BOM, and stripped of the punctuation around them that the alphabet does not spell ("oven." and
    "(oven" are "oven"; "don't" keeps its apostrophe where the alphabet has one)."""
    text = line.replace("\ufeff", "")
    if lowercase:
        text = text.lower()
    known = set(alphabet.symbols)
    found = []
    for word in text.split():
        start, end = 0, len(word)
        while start < end and word[start] not in known and _punctuation(word[start]):
            start += 1
        while end > start and word[end - 1] not in known and _punctuation(word[end - 1]):
            end -= 1
        if start < end:
            found.append(word[start:end])
    return found


@dataclass(frozen=True)
class Vocabulary:
    words: tuple[str, ...]  # most frequent first
    running_words: int
    distinct_words: int
    unspellable: Counter[str]  # characters the alphabet lacks -> running words that had them


def _spellable(word: str, alphabet: Alphabet | None) -> str | None:
    """The first character the alphabet cannot spell, or None."""
    if alphabet is None:
        return None
    missing = alphabet.unknown(word)
    return missing[0] if missing else None


def count_words(config: LmConfig, alphabet: Alphabet | None, lowercase: bool, corpus: Path) -> Vocabulary:
    """Count the corpus's words and write the (lowercased) text lmplz reads to ``corpus`` (gzip)."""
    counts: Counter[str] = Counter()
    with gzip.open(corpus, "wt", encoding="utf-8", compresslevel=1) as out:
        for line in _lines(config.text):
            if alphabet is not None:
                words = words_of(line, alphabet, lowercase)
            else:
                words = [c for c in (line.lower() if lowercase else line) if not c.isspace()]
            if words:
                counts.update(words)
                out.write(" ".join(words) + "\n")
    running = sum(counts.values())
    if running == 0:
        raise ScorerError(f"{', '.join(map(str, config.text))}: the text has no words")
    unspellable: Counter[str] = Counter()
    vocabulary: list[str] = []
    for word, count in counts.most_common():
        bad = _spellable(word, alphabet)
        if bad is not None:
            unspellable[bad] += count
        elif len(vocabulary) < config.top_k:
            vocabulary.append(word)
    share = sum(unspellable.values()) / running
    if share > config.max_oov_fraction or not vocabulary:
        shown = ", ".join(repr(char) for char, _ in unspellable.most_common(8))
        raise ScorerError(
            f"{config.text[0]}: {share:.0%} of the words have characters outside the alphabet ({shown}); "
            "use the alphabet the text is written in (--alphabet_config_path), or clean the text"
        )
    return Vocabulary(tuple(vocabulary), running, len(counts), unspellable)


# --- the build -------------------------------------------------------------------------------------


def _lmplz(config: LmConfig, tools: dict[str, Path], work: Path, corpus: Path, log: Log) -> Path:
    arpa = work / "lm.arpa"
    prune = [str(count) for count in config.prune[: config.order]]
    command = [str(tools["lmplz"]), "--order", str(config.order), "--memory", config.memory]
    command += ["--temp_prefix", str(work), "--text", str(corpus), "--arpa", str(arpa)]
    command += ["--limit_vocab_file", str(work / "vocab.txt"), "--discount_fallback"]
    command += ["--prune", *prune] if any(count > 0 for count in config.prune) else []
    log(f"estimating a {config.order}-gram model with lmplz")
    _run(command, log, "lmplz")
    return arpa


def _build_binary(config: LmConfig, tools: dict[str, Path], work: Path, arpa: Path, log: Log) -> Path:
    binary = work / "lm.binary"
    command = [str(tools["build_binary"]), "-S", config.memory, "-T", str(work / "trie-")]
    if config.binary_type == "trie":
        command += ["-a", str(config.binary_a_bits), "-q", str(config.binary_q_bits)]
    command += ["-v", config.binary_type, str(arpa), str(binary)]
    log(f"writing the binary {config.binary_type} model")
    _run(command, log, "build_binary")
    return binary


def build(config: LmConfig, alphabet: Alphabet | None, log: Log = print) -> ScorerInfo:
    """Build ``config.output``. ``alphabet`` None builds a UTF-8 scorer for byte-output models: every
    character but whitespace is a word of the LM (DeepSpeech's scorers for Mandarin)."""
    tools = find_tools(config.kenlm_bin)
    lowercase = config.lowercase
    if lowercase is None:
        lowercase = alphabet is None or not any(symbol != symbol.lower() for symbol in alphabet.symbols)
    with tempfile.TemporaryDirectory(prefix="harken-lm-", dir=config.output.parent) as scratch:
        work = Path(scratch)
        corpus = work / "corpus.txt.gz"
        vocabulary = count_words(config, alphabet, lowercase, corpus)
        log(
            f"{vocabulary.running_words:,} words, {vocabulary.distinct_words:,} distinct; "
            f"vocabulary: the {len(vocabulary.words):,} most frequent the alphabet can spell"
        )
        for char, count in vocabulary.unspellable.most_common(5):
            log(f"  left out: {count:,} words with {char!r}")
        (work / "vocab.txt").write_text("\n".join(vocabulary.words) + "\n", encoding="utf-8")
        binary = _build_binary(config, tools, work, _lmplz(config, tools, work, corpus, log), log)
        info = ScorerInfo(
            alpha=config.default_alpha,
            beta=config.default_beta,
            utf8=alphabet is None,
            vocabulary=vocabulary.words,
            alphabet=None if alphabet is None else alphabet.symbols,
            order=config.order,
            built={
                "text": [str(path) for path in config.text],
                "top_k": config.top_k,
                "prune": list(config.prune),
                "lowercase": lowercase,
                "running_words": vocabulary.running_words,
            },
        )
        write_scorer(config.output, binary, info)
    log(f"wrote {config.output} ({config.output.stat().st_size / 1e6:.1f} MB)")
    return info
