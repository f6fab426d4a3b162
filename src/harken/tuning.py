"""Find the scorer's alpha and beta on a dev set (DeepSpeech's lm_optimizer.py, with optuna's TPE).

The acoustic model runs once over the dev set; each trial only re-decodes the stored log-probabilities
with another (alpha, beta), so a trial costs the beam search alone. The scorer's current pair is the
first trial, so the pair written back is never worse on this set than the one it replaces.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from harken import checkpoint, data, evaluate, metrics
from harken.alphabet import Alphabet
from harken.config import Config, option, require
from harken.decoder import BeamSettings, Decoder, settings_from
from harken.model import choose_device
from harken.scorer import Scorer, ScorerError, set_defaults
from harken.summary import ProgressBar

Log = Callable[[str], None]


@dataclass(frozen=True)
class TuneConfig:
    """``harken lm tune``'s search: how many decodings of the dev set, over which (alpha, beta) box."""

    n_trials: int = option(100, "decodings of the dev set to try")
    lm_alpha_max: float = option(5.0, "largest alpha tried")
    lm_beta_max: float = option(5.0, "largest beta tried")

    def __post_init__(self) -> None:
        require(self.n_trials >= 1, "n_trials", self.n_trials, "1 or more")
        require(0 <= self.lm_alpha_max < math.inf, "lm_alpha_max", self.lm_alpha_max, "a finite 0 or more")
        require(0 <= self.lm_beta_max < math.inf, "lm_beta_max", self.lm_beta_max, "a finite 0 or more")


@dataclass(frozen=True)
class TuneResult:
    alpha: float
    beta: float
    wer: float
    cer: float
    start_wer: float  # with the scorer's pair before tuning
    trials: int


def dev_log_probs(config: Config, log: Log) -> tuple[list[np.ndarray], list[str], Alphabet]:
    """The acoustic model's log-probs [time, n_classes] and the transcript of every dev sample."""
    loaded = checkpoint.load_model(
        config.load_dir, config.checkpoint.load_evaluate, choose_device(config.runtime.device)
    )
    log(f"Computing log-probabilities of the dev set with {loaded.path}")
    frames: list[np.ndarray] = []
    texts: list[str] = []
    device = next(loaded.model.parameters()).device
    split = data.load_split("dev", config.data, loaded.alphabet, loaded.dims.features, log)
    loader = data.loader(split.dataset, data.BatchOrder(split.batches, 0, 0), data.default_workers(0))
    loaded.model.eval()
    with torch.inference_mode():
        for batch in loader:
            if not len(batch):
                continue
            batch = batch.to(device)
            _, log_probs, lengths = evaluate.batch_losses(loaded.model, batch, loaded.dims.features)
            cpu = log_probs.float().cpu().numpy()
            for row, index in enumerate(batch.indices):
                frames.append(np.ascontiguousarray(cpu[row, : int(lengths[row])]))
                texts.append(split.samples[index].transcript)
    if not frames:
        raise ScorerError(f"{config.data.dev_files}: no dev samples to tune on")
    return frames, texts, loaded.alphabet


def rates(decoder: Decoder, frames: list[np.ndarray], texts: list[str]) -> tuple[float, float]:
    """(WER, CER) of decoding the log-probs ``frames`` against ``texts``."""
    hypotheses = [decoder.decode(f)[0].text for f in frames]
    return metrics.wer(texts, hypotheses), metrics.cer(texts, hypotheses)


def search_pair(
    frames: list[np.ndarray],
    texts: list[str],
    decoding: tuple[Alphabet, Scorer, BeamSettings],
    search: TuneConfig = TuneConfig(),
    progress: bool = True,
) -> TuneResult:
    """The best (alpha, beta) in [0, lm_alpha_max] x [0, lm_beta_max] for decoding the log-probs ``frames``
    into ``texts`` with ``decoding`` (the model's alphabet, the scorer, the beam's other settings); the
    scorer's own pair is the first trial, so the result is never worse on this set. Writes nothing."""
    import optuna

    alphabet, scorer, base = decoding
    start = (scorer.alpha, scorer.beta)
    interrupted = False

    def objective(trial: optuna.Trial) -> float:
        nonlocal interrupted
        alpha = trial.suggest_float("alpha", 0.0, max(search.lm_alpha_max, start[0]))
        beta = trial.suggest_float("beta", 0.0, max(search.lm_beta_max, start[1]))
        settings = dataclasses.replace(base, alpha=alpha, beta=beta)
        try:
            wer, cer = rates(Decoder(alphabet, settings, scorer), frames, texts)
        except KeyboardInterrupt:  # Ctrl-C: optuna would log the trial as failed, with a traceback
            interrupted = True
            trial.study.stop()
            raise optuna.TrialPruned() from None
        trial.set_user_attr("cer", cer)
        return wer

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial({"alpha": start[0], "beta": start[1]})
    with ProgressBar("Tuning alpha and beta", search.n_trials, progress) as bar:
        study.optimize(objective, n_trials=search.n_trials, callbacks=[lambda s, t: bar.advance()])
    if interrupted:
        raise KeyboardInterrupt  # quietly: the command's Ctrl-C handling says what was kept
    best = study.best_trial
    first = study.trials[0]
    return TuneResult(
        alpha=best.params["alpha"],
        beta=best.params["beta"],
        wer=float(best.value or 0.0),
        cer=float(best.user_attrs["cer"]),
        start_wer=float(first.value or 0.0),
        trials=len(study.trials),
    )


def tune(config: Config, search: TuneConfig = TuneConfig(), log: Log = print) -> TuneResult:
    """Search (alpha, beta) in [0, lm_alpha_max] x [0, lm_beta_max]; store the best pair in the scorer."""
    if not config.decoder.scorer_path:
        raise ScorerError("lm tune needs --scorer")
    if not config.data.dev_files:
        raise ScorerError("lm tune needs --dev_files")
    frames, texts, alphabet = dev_log_probs(config, log)
    scorer = Scorer(config.decoder.scorer_path, alphabet)
    base = settings_from(config.decoder)
    log(f"Tuning on {len(frames)} dev samples, beam width {base.width(scorer)}, {search.n_trials} trials")
    start = (scorer.alpha, scorer.beta)
    result = search_pair(frames, texts, (alphabet, scorer, base), search, config.runtime.show_progressbar)
    log(
        f"Best: alpha {result.alpha:.4f}, beta {result.beta:.4f}: WER {result.wer:.4f}, CER {result.cer:.4f} "
        f"(the scorer's pair {start[0]:.4f}, {start[1]:.4f}: WER {result.start_wer:.4f})"
    )
    set_defaults(scorer.path, result.alpha, result.beta)
    log(f"Stored alpha {result.alpha:.4f} and beta {result.beta:.4f} in {scorer.path} as its defaults")
    return result
