"""LibriSpeech: an extracted tree to DeepSpeech CSVs, as DeepSpeech's import_librivox.py did.

The tree is ``LibriSpeech/<subset>/<speaker>/<chapter>/`` holding ``<speaker>-<chapter>-<utt>.flac`` and
``<speaker>-<chapter>.trans.txt`` (one line per utterance: its id, a space, the transcript in capitals).
SOURCE may be the ``LibriSpeech`` folder, one subset folder, or a folder above them; every subset found
(``train-clean-100``, ``dev-clean`` ...) is imported unless ``subsets`` names some. Each utterance becomes
``TARGET/<subset>/<id>.wav`` and each subset ``TARGET/librivox-<subset>.csv`` (DeepSpeech's names), with
the transcript lowercased.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harken.config import comma_list, option
from harken.importers.corpus import ImportConfig, Utterance, check_source, check_target, read_text, run

__all__ = ["LibriSpeechConfig", "prepare"]

_EXPECTED = "an extracted LibriSpeech tree: <subset>/<speaker>/<chapter>/*.flac and *.trans.txt"


@dataclass(frozen=True)
class LibriSpeechConfig(ImportConfig):
    """Which subsets to import."""

    subsets: tuple[str, ...] = option(
        (), "comma-separated subsets, e.g. train-clean-100,dev-clean (default: every one found)",
        parse=comma_list, metavar="NAMES",
    )  # fmt: skip


def find_subsets(source: Path) -> dict[str, Path]:
    """Subset name -> its folder: each folder two levels above a ``*.trans.txt`` file, sorted by name."""
    found: dict[str, Path] = {}
    for transcripts in source.rglob("*.trans.txt"):
        if len(transcripts.relative_to(source).parts) >= 3:
            subset = transcripts.parents[2]
            found.setdefault(subset.name, subset)
    return dict(sorted(found.items()))


def _utterances(subset: Path, target: Path) -> Iterator[Utterance]:
    for transcripts in sorted(subset.glob("*/*/*.trans.txt")):
        for line in read_text(transcripts).splitlines():
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            flac = transcripts.parent / f"{uid}.flac"
            yield Utterance(f"librivox-{subset.name}.csv", flac, target / subset.name / f"{uid}.wav", text)


def prepare(
    source: Path, target: Path, config: LibriSpeechConfig = LibriSpeechConfig(), progress: bool = True
) -> list[Path]:
    """Import the subsets under ``source`` into ``target``; return the CSV paths, one per subset."""
    source, target = check_source(Path(source), _EXPECTED), check_target(Path(target))
    subsets = find_subsets(source)
    if not subsets:
        raise ValueError(f"{source}: no *.trans.txt files (expected {_EXPECTED})")
    missing = [name for name in config.subsets if name not in subsets]
    if missing:
        raise ValueError(
            f"{source}: no subset {', '.join(missing)} (found {', '.join(subsets)}; choose with --subsets)"
        )
    chosen = [subsets[name] for name in config.subsets] if config.subsets else list(subsets.values())
    utterances = [utterance for subset in chosen for utterance in _utterances(subset, target)]
    csvs = [f"librivox-{subset.name}.csv" for subset in chosen]
    return run("librispeech", utterances, target, csvs, config, progress)
