"""CTC decoding: log-probabilities -> text, greedy or by beam search with an optional KenLM scorer.

The beam search is flashlight-text's C++ decoder (the one torchaudio wraps). With a scorer it is
DeepSpeech's: words are spelled through the scorer's vocabulary trie, each completed word adds
``alpha * ln P(word | previous words) + beta`` and a word outside the vocabulary cannot be spelled.
Without a scorer it is a plain CTC prefix beam search. Hot phrases to boost are spotted beside the search
and written into its transcripts (with a scorer, where the search's own score says they win); phrases to
avoid are charged in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harken.alphabet import Alphabet
from harken.config import BEAM_WITH_SCORER, BEAM_WITHOUT_SCORER, DecoderConfig, check_search
from harken.phrase_writer import PhraseWriter, Spotting, spotting_for
from harken.phrases import checked, phrase_lm
from harken.scorer import LN10, UNKNOWN, Scorer, parse_hot_words


@dataclass(frozen=True)
class Decoded:
    text: str
    labels: tuple[int, ...]  # the emitted labels (a label's symbol may be more than one character)
    timesteps: tuple[int, ...]  # frame index at which each label was emitted
    confidence: float  # sum of the chosen frames' log-probabilities


class GreedyDecoder:
    """Best-path decoding that goes on where it stopped: feed frames as they come (a stream), read the
    result at any time. Each frame is looked at once, so decoding a long stream costs what its frames do."""

    def __init__(self, alphabet: Alphabet) -> None:
        self.alphabet = alphabet
        self.labels: list[int] = []
        self.steps: list[int] = []
        self.confidence = 0.0
        self.frames = 0
        self._previous = -1

    def extend(self, log_probs: torch.Tensor) -> None:
        """log_probs: [time, n_classes], the frames that follow those already seen."""
        best, ids = log_probs.max(dim=-1)  # [time], [time]
        for offset, label in enumerate(ids.tolist()):
            if label != self._previous and label != self.alphabet.blank:
                self.labels.append(label)
                self.steps.append(self.frames + offset)
            self._previous = label
        self.frames += len(ids)
        self.confidence += float(best.sum())

    def result(self) -> Decoded:
        return Decoded(
            self.alphabet.decode(self.labels), tuple(self.labels), tuple(self.steps), self.confidence
        )

    def finish(self, n_best: int = 1) -> list[Decoded]:
        """The (one) best path: greedy decoding has no other candidates."""
        return [self.result()]


def greedy(log_probs: torch.Tensor, length: int, alphabet: Alphabet) -> Decoded:
    """Best path: the likeliest class at every frame, repeats merged, blanks dropped.

    log_probs: [time, n_classes] for one utterance; only the first ``length`` frames are read.
    """
    state = GreedyDecoder(alphabet)
    state.extend(log_probs[:length])
    return state.result()


def greedy_batch(log_probs: torch.Tensor, lengths: torch.Tensor, alphabet: Alphabet) -> list[Decoded]:
    """log_probs: [batch, time, n_classes], lengths: [batch] -> one Decoded per row."""
    cpu = log_probs.detach().float().cpu()
    return [greedy(cpu[row], int(lengths[row]), alphabet) for row in range(cpu.shape[0])]


@dataclass(frozen=True)
class BeamSettings:
    """How the beam search runs (DeepSpeech's flag names; alpha/beta None: the scorer's defaults)."""

    beam_width: int = 0  # 0: BEAM_WITH_SCORER with a scorer, BEAM_WITHOUT_SCORER without
    cutoff_prob: float = 1.0  # keep a frame's likeliest labels until their probabilities sum to this
    cutoff_top_n: int = 300  # and at most this many of them
    alpha: float | None = None
    beta: float | None = None
    hot_words: Mapping[str, float] = field(default_factory=dict)
    # Drop beams this far (natural log) below the best one; None: 25 with a scorer (its word scores
    # reorder beams late), 10 without (measured: the same WER as 25 on the demo model, 9x faster at 500).
    beam_threshold: float | None = None

    def __post_init__(self) -> None:
        check_search(self.beam_width, self.cutoff_prob, self.cutoff_top_n)
        object.__setattr__(self, "hot_words", checked(self.hot_words))  # one-line ValueErrors

    def width(self, scorer: Scorer | None) -> int:
        """The beam width searched: ``beam_width``, or (0) the default for searching with or without a
        scorer."""
        if self.beam_width:
            return self.beam_width
        return BEAM_WITHOUT_SCORER if scorer is None else BEAM_WITH_SCORER

    def weights(self, scorer: Scorer) -> tuple[float, float]:
        """(alpha, beta): these settings' where given, else the scorer's defaults."""
        alpha = scorer.alpha if self.alpha is None else self.alpha
        return alpha, scorer.beta if self.beta is None else self.beta


_STEP_FRAMES = 16


def _pruned(frames: np.ndarray, cutoff_prob: float) -> np.ndarray:
    """DeepSpeech's cutoff_prob: per frame, labels outside the smallest set holding that much probability
    mass are made impossible. frames: [time, n_classes] log-probs."""
    if cutoff_prob >= 1.0 or len(frames) == 0:
        return frames
    order = np.argsort(-frames, axis=1)  # [time, n_classes]
    mass = np.cumsum(np.exp(np.take_along_axis(frames, order, axis=1)), axis=1)
    drop = np.concatenate([np.zeros((len(frames), 1), bool), mass[:, :-1] >= cutoff_prob], axis=1)
    out = frames.copy()
    np.put_along_axis(out, order, np.where(drop, np.float32(-1e30), np.take_along_axis(frames, order, 1)), 1)
    return out


UTF8_TOP_N = 8  # bytes per frame a search with a UTF-8 scorer tries (the Russian sample: same text as 256)


class BeamDecoder:
    """A beam search that goes on where it stopped, like :class:`GreedyDecoder`: ``extend`` with the next
    frames, ``result`` for the best transcript so far, ``finish`` for the final n best."""

    def __init__(
        self,
        alphabet: Alphabet,
        settings: BeamSettings,
        scorer: Scorer | None = None,
        spots: Spotting | None = None,  # the boosted phrases' spotting (made from the settings if None)
    ) -> None:
        from flashlight.lib.text import decoder as fl

        self.alphabet, self.settings, self.scorer = alphabet, settings, scorer
        self.frames = 0
        self._finished = False
        self._words: list[str] = []
        self._writer: PhraseWriter | None = None
        self._final: list[Any] = []
        self._read: dict[int, Decoded] = {}  # final hypotheses read so far
        space = alphabet.symbols.index(" ") if " " in alphabet.symbols else alphabet.blank
        self._space = space
        top_n = min(settings.cutoff_top_n, alphabet.n_classes)
        threshold, width = settings.beam_threshold, settings.width(scorer)
        if threshold is None:
            threshold = 10.0 if scorer is None else 25.0
        spotted = spots or spotting_for(alphabet, settings, scorer)  # boosts: spotted beside the search
        if spotted is not None and spotted.chains is not None:
            weights = (1.0, 0.0) if scorer is None else settings.weights(scorer)
            self._writer = PhraseWriter(spotted, alphabet, scorer, weights)
        if scorer is None:  # phrases to avoid: charged in the search
            graph = None if spotted is None else spotted.penalties
            self._lm = fl.ZeroLM() if graph is None else phrase_lm(graph)  # held: flashlight calls into it
            options: Any = fl.LexiconFreeDecoderOptions(
                width, top_n, threshold, 1.0, 0.0, True, fl.CriterionType.CTC
            )
            self._search: Any = fl.LexiconFreeDecoder(options, self._lm, space, alphabet.blank, [])
        elif scorer.utf8:  # characters for words: scored by the LM as their last byte arrives
            self._words = list(scorer.vocabulary)
            options = fl.LexiconFreeDecoderOptions(  # its LM runs in Python: the likeliest bytes only
                width, min(top_n, UTF8_TOP_N), threshold, 1.0, 0.0, True, fl.CriterionType.CTC
            )
            alpha, beta = settings.weights(scorer)
            self._lm = scorer.character_lm(settings.hot_words, alpha, beta)  # held: flashlight calls into it
            self._search = fl.LexiconFreeDecoder(options, self._lm, space, alphabet.blank, [])
        else:
            avoided = {phrase: boost for phrase, boost in settings.hot_words.items() if boost < 0}
            trie, make_lm, self._words = scorer.search_parts(avoided)
            self._lm = lm = make_lm()  # held: flashlight calls into it
            alpha, beta = settings.weights(scorer)
            options = fl.LexiconDecoderOptions(
                width, top_n, threshold, alpha * LN10, beta,
                float("-inf"), 0.0, True, fl.CriterionType.CTC,
            )  # fmt: skip
            unknown = self._words.index(UNKNOWN)
            self._search = fl.LexiconDecoder(options, trie, lm, space, alphabet.blank, unknown, [], False)
        self._search.decode_begin()

    def extend(self, log_probs: torch.Tensor | np.ndarray) -> None:
        """log_probs: [time, n_classes], the frames that follow those already seen."""
        if self._finished:
            raise RuntimeError("the beam search has finished; start a new one")
        frames = (
            log_probs.detach().float().cpu().numpy() if isinstance(log_probs, torch.Tensor) else log_probs
        )
        frames = np.ascontiguousarray(_pruned(np.asarray(frames, np.float32), self.settings.cutoff_prob))
        if self._writer is not None:
            self._writer.extend(frames)
        self.frames += len(frames)
        # flashlight-text holds the GIL while it decodes: a few frames at a time let other threads run.
        for start in range(0, len(frames), _STEP_FRAMES):
            piece = frames[start : start + _STEP_FRAMES]
            self._search.decode_step(piece.ctypes.data, piece.shape[0], piece.shape[1])

    def _path(self, hypothesis: Any) -> list[int]:
        """The hypothesis' label at each frame ([0] of its tokens is the start state)."""
        return list(hypothesis.tokens)[1 : self.frames + 1]

    def _decoded(self, hypothesis: Any, final: bool = False) -> Decoded:
        """The hypothesis' labels (repeats merged, blanks dropped, spaces never doubled nor at the ends)
        and the frame each starts at. In numpy: a stream reads its best hypothesis at every step."""
        path = np.asarray(self._path(hypothesis), np.int64)  # [frames]
        starts = np.flatnonzero(np.diff(path, prepend=-1))  # [runs] the first frame of each run
        runs = path[starts]
        kept = (runs >= 0) & (runs < len(self.alphabet))  # not the blank
        runs, starts = runs[kept], starts[kept]
        space = runs == self._space
        doubled = space & np.concatenate([[True], space[:-1]])  # a space after a space, or first
        runs, starts = runs[~doubled], starts[~doubled]
        end = len(runs) - 1 if len(runs) and runs[-1] == self._space else len(runs)
        labels, steps = runs[:end].tolist(), starts[:end].tolist()
        decoded = Decoded(
            self.alphabet.decode(labels), tuple(labels), tuple(steps), hypothesis.emittingModelScore
        )
        written = None if self._writer is None else self._writer.written(decoded, path, final)
        if written is None:
            return decoded
        labels, steps = written
        return Decoded(self.alphabet.decode(labels), tuple(labels), tuple(steps), decoded.confidence)

    def result(self) -> Decoded:
        """The best transcript of the frames so far (its last word may still change)."""
        if self.frames == 0:
            return Decoded("", (), (), 0.0)
        return self._decoded(self._search.get_best_hypothesis())

    def finish(self, n_best: int = 1) -> list[Decoded]:
        """End the search: the ``n_best`` best distinct transcripts, best first."""
        if not self._finished:
            if self.scorer is not None and not self.scorer.utf8 and self.frames:
                # A final word boundary (a frame of certain space): the last word is scored like the others.
                end = np.full((1, self.alphabet.n_classes), -1e30, np.float32)
                end[0, self._space] = 0.0
                self._search.decode_step(end.ctypes.data, 1, end.shape[1])
            self._search.decode_end()
            self._finished = True
            self._final = sorted(self._search.get_all_final_hypothesis(), key=lambda h: -h.score)
            self._read = {}
        results: list[Decoded] = []
        for index, hypothesis in enumerate(self._final[: max(4 * n_best, 16)]):
            if index not in self._read:  # read as needed: phrases are written into each one read
                self._read[index] = self._decoded(hypothesis, final=True)
            decoded = self._read[index]
            if all(decoded.text != seen.text for seen in results):
                results.append(decoded)
            if len(results) == n_best:
                break
        return results or [Decoded("", (), (), 0.0)]


def beam_search(
    log_probs: torch.Tensor, length: int, alphabet: Alphabet, settings: BeamSettings, scorer: Scorer | None
) -> Decoded:
    """One utterance's best transcript. log_probs: [time, n_classes]; the first ``length`` frames are read."""
    search = BeamDecoder(alphabet, settings, scorer)
    search.extend(log_probs[:length])
    return search.finish()[0]


class Decoder:
    """A configured decoder: greedy when the beam is 1 and there is no scorer, else the beam search.

    The scorer is loaded once and shared by every search this makes."""

    def __init__(self, alphabet: Alphabet, settings: BeamSettings, scorer: Scorer | None = None) -> None:
        self.alphabet, self.settings, self.scorer = alphabet, settings, scorer
        # Made once for every search; its one-line refusals now, not in the first search.
        self._spots: Spotting | None = spotting_for(alphabet, settings, scorer)
        if scorer is not None and settings.hot_words:
            scorer.check_hot_words(settings.hot_words)

    @classmethod
    def from_config(cls, alphabet: Alphabet, config: DecoderConfig) -> Decoder:
        scorer = Scorer(config.scorer_path, alphabet) if config.scorer_path else None
        return cls(alphabet, settings_from(config), scorer)

    @property
    def greedy(self) -> bool:
        return self.settings.width(self.scorer) == 1 and self.scorer is None and not self.settings.hot_words

    def stream(self) -> GreedyDecoder | BeamDecoder:
        """A new search to feed frames to as they come."""
        return (
            GreedyDecoder(self.alphabet)
            if self.greedy
            else BeamDecoder(self.alphabet, self.settings, self.scorer, self._spots)
        )

    def decode(self, log_probs: torch.Tensor | np.ndarray, n_best: int = 1) -> list[Decoded]:
        """One utterance's ``n_best`` best transcripts. log_probs: [time, n_classes]."""
        search = self.stream()
        if isinstance(search, GreedyDecoder):
            search.extend(torch.as_tensor(log_probs))
        else:
            search.extend(log_probs)
        return search.finish(n_best)

    def decode_batch(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Decoded]:
        """log_probs: [batch, time, n_classes], lengths: [batch] -> the best transcript per row."""
        if self.greedy:
            return greedy_batch(log_probs, lengths, self.alphabet)
        cpu = log_probs.detach().float().cpu().numpy()
        return [self.decode(cpu[row, : int(lengths[row])])[0] for row in range(cpu.shape[0])]


def settings_from(config: DecoderConfig) -> BeamSettings:
    return BeamSettings(
        beam_width=config.beam_width,
        cutoff_prob=config.cutoff_prob,
        cutoff_top_n=config.cutoff_top_n,
        alpha=config.lm_alpha,
        beta=config.lm_beta,
        hot_words=parse_hot_words(config.hot_words),
    )
