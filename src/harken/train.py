"""The training loop: epochs of CTC training, dev loss, checkpoints, schedule, early stop, test.

``train(config)`` is the whole of ``harken train``. Re-running the same configuration resumes from the
newest checkpoint at the same epoch and batch, with the optimizer, schedule and RNG state restored, so
an interrupted run (Ctrl-C, kill -9, a lost machine) continues as if it had not stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from harken import checkpoint, data, evaluate
from harken.alphabet import Alphabet
from harken.config import CheckpointConfig, Config
from harken.data import Split, load_split
from harken.model import DeepSpeech, choose_device, parameter_count
from harken.summary import ProgressBar, Summaries, plot_history

DEFAULT_CHECKPOINTS = CheckpointConfig().checkpoint_dir


class TrainingError(RuntimeError):
    """A problem that stops training; one line for the user."""


@dataclass
class Progress:
    """Where training stands; stored in every checkpoint."""

    epoch: int = 0  # the epoch being trained (0-based)
    batch: int = 0  # batches of that epoch already trained
    step: int = 0  # optimizer steps so far
    learning_rate: float = 0.0
    best_dev_loss: float = math.inf
    epochs_without_improvement: int = 0
    epoch_loss_sum: float = 0.0  # sum of this epoch's batch losses so far
    epoch_loss_batches: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)  # one row per finished epoch


@dataclass
class Run:
    """Everything one training run holds."""

    config: Config
    alphabet: Alphabet
    device: torch.device
    model: DeepSpeech
    optimizer: torch.optim.Adam
    progress: Progress
    log: Callable[[str], None]
    last_save: float = field(default_factory=time.monotonic)


@dataclass
class TrainResult:
    progress: Progress
    checkpoint_dir: Path
    test_reports: list[evaluate.Report]


def _payload(run: Run) -> dict[str, Any]:
    return checkpoint.make_payload(
        run.config, run.alphabet, run.model.state_dict(), run.optimizer.state_dict(), asdict(run.progress)
    )


def save(run: Run, kind: str = checkpoint.TRAIN) -> Path:
    keep = run.config.checkpoint.max_to_keep if kind == checkpoint.TRAIN else 1
    path = checkpoint.save(run.config.save_dir, kind, run.progress.step, _payload(run), keep)
    run.last_save = time.monotonic()
    return path


def _set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value


def resume(run: Run) -> None:
    """Continue this run, or start it from --load_checkpoint_dir, or initialise a new model.

    The save directory is this run's own: when it holds checkpoints, the newest is resumed whatever
    --load_train says (so re-running a command always continues it). Only a run that has not saved
    anything yet starts from --load_checkpoint_dir (or checkpoint_dir) as --load_train chooses.
    """
    cfg = run.config
    found = checkpoint.newest(cfg.save_dir, (checkpoint.TRAIN, checkpoint.BEST), run.device, run.log)
    if found is not None:
        _continue(run, *found)
        return
    mode = cfg.checkpoint.load_train
    kinds = checkpoint.kinds_for(mode, training=True)
    found = checkpoint.newest(cfg.load_dir, kinds, run.device, run.log) if kinds else None
    if found is None:
        if mode in ("last", "best"):
            raise TrainingError(f"{cfg.load_dir}: no {mode} checkpoint to start from (--load_train {mode})")
        run.log(f"Initialising a new model ({parameter_count(run.model):,} parameters)")
        return
    path, payload = found
    checkpoint.check_compatible(path, payload, cfg, run.alphabet)
    run.model.load_state_dict(payload["model"])
    if payload.get("optimizer"):
        run.optimizer.load_state_dict(payload["optimizer"])
    _set_learning_rate(run.optimizer, run.progress.learning_rate)
    run.log(f"Starting from {path} (saving to {cfg.save_dir})")


def _continue(run: Run, path: Path, payload: dict[str, Any]) -> None:
    """Restore weights, optimizer, progress and RNG state of this run's checkpoint."""
    checkpoint.check_compatible(path, payload, run.config, run.alphabet)
    run.model.load_state_dict(payload["model"])
    if payload.get("optimizer"):
        run.optimizer.load_state_dict(payload["optimizer"])
    known = {f.name for f in fields(Progress)}
    run.progress = Progress(**{k: v for k, v in payload["progress"].items() if k in known})
    if run.progress.learning_rate <= 0:  # an imported model carries no training progress
        run.progress.learning_rate = run.config.train.learning_rate
    _set_learning_rate(run.optimizer, run.progress.learning_rate)
    if "rng" in payload:
        torch.set_rng_state(payload["rng"]["torch"].cpu())
        if "cuda" in payload["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in payload["rng"]["cuda"]])
    run.log(
        f"Resuming from {path}: epoch {run.progress.epoch + 1}, batch {run.progress.batch}, "
        f"step {run.progress.step}"
    )
    if run.progress.learning_rate != run.config.train.learning_rate:
        run.log(f"  (learning rate {run.progress.learning_rate:g} from the checkpoint, not --learning_rate)")


def train_epoch(run: Run, split: Split, workers: int, summaries: Summaries) -> None:
    """Train the rest of the current epoch, saving a checkpoint every checkpoint_secs."""
    cfg, progress = run.config, run.progress
    order = data.BatchOrder(
        split.batches, progress.epoch, cfg.train.random_seed, cfg.data.shuffle_batches, start=progress.batch
    )
    loader = data.loader(split.dataset, order, workers, pin=run.device.type == "cuda")
    run.model.train()
    bar = ProgressBar(
        f"Epoch {progress.epoch + 1}/{cfg.train.epochs}",
        len(split.batches),
        cfg.train.show_progressbar,
        done=progress.batch,
    )
    with bar:
        for batch in loader:
            for _, reason in batch.failed:
                run.log(f"warning: skipping {reason}")
            loss = _step(run, batch.to(run.device)) if len(batch) else None
            if loss is not None:
                progress.epoch_loss_sum += loss
                progress.epoch_loss_batches += 1
                progress.step += 1
                summaries.scalar("train/batch_loss", loss, progress.step)
            elif len(batch):
                names = ", ".join(str(split.samples[i].path) for i in batch.indices[:3])
                run.log(f"warning: non-finite loss, batch skipped without an update ({names} ...)")
            progress.batch += 1
            bar.advance(loss=progress.epoch_loss_sum / max(1, progress.epoch_loss_batches))
            if time.monotonic() - run.last_save >= cfg.checkpoint.checkpoint_secs:
                save(run)


def _step(run: Run, batch: data.Batch) -> float | None:
    """One optimizer step on a batch; None (and no update) when the loss is not finite."""
    losses, _, _ = evaluate.batch_losses(run.model, batch, run.config.features.n_context)
    loss = losses.mean()  # [] mean per-sample CTC loss, as DeepSpeech
    if not torch.isfinite(loss):
        run.optimizer.zero_grad(set_to_none=True)
        return None
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.config.train.clip_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.train.clip_grad_norm)
    run.optimizer.step()
    return float(loss.detach())


def validate(run: Run, split: Split, workers: int) -> evaluate.Report:
    """Loss, WER and CER on the dev set (the model in eval mode, no dropout; greedy decoding)."""
    loader = data.loader(split.dataset, data.BatchOrder(split.batches, 0, 0), workers)
    with ProgressBar(
        f"Validating {split.name}", len(split.samples), run.config.train.show_progressbar
    ) as bar:
        report = evaluate.run(
            run.model,
            loader,
            split.samples,
            run.alphabet,
            run.config.features.n_context,
            run.device,
            name=split.name,
            on_batch=bar.advance,
        )
    run.model.train()
    return report


def end_epoch(run: Run, train_loss: float, report: evaluate.Report | None, summaries: Summaries) -> bool:
    """Book-keeping after an epoch: best checkpoint, plateau LR, early stop. True means stop."""
    cfg, progress = run.config.train, run.progress
    row = {
        "epoch": progress.epoch + 1,
        "step": progress.step,
        "train_loss": train_loss,
        "learning_rate": progress.learning_rate,
    }
    summaries.scalar("train/epoch_loss", train_loss, progress.epoch + 1)
    summaries.scalar("train/learning_rate", progress.learning_rate, progress.epoch + 1)
    stop = False
    if report is not None:
        dev = report.loss
        row.update(dev_loss=dev, dev_wer=report.wer, dev_cer=report.cer)
        for name in ("loss", "wer", "cer"):
            summaries.scalar(f"dev/{name}", row[f"dev_{name}"], progress.epoch + 1)
        improved = dev < progress.best_dev_loss - cfg.es_min_delta
        progress.epochs_without_improvement = 0 if improved else progress.epochs_without_improvement + 1
        is_best = dev < progress.best_dev_loss
        progress.best_dev_loss = min(progress.best_dev_loss, dev)
        if is_best:
            run.log(f"New best dev loss {dev:.4f}, saved {save(run, checkpoint.BEST)}")
        waited = progress.epochs_without_improvement
        if cfg.reduce_lr_on_plateau and waited > 0 and waited % cfg.plateau_epochs == 0:
            progress.learning_rate *= cfg.plateau_reduction
            _reload_best(run)
            run.log(f"Dev loss plateaued for {waited} epochs: learning rate now {progress.learning_rate:g}")
        if cfg.early_stop and waited >= cfg.es_epochs:
            run.log(f"Early stop: no dev loss improvement of {cfg.es_min_delta} for {waited} epochs")
            progress.stopped_early = stop = True
    progress.history.append(row)
    progress.epoch += 1
    progress.batch = 0
    progress.epoch_loss_sum, progress.epoch_loss_batches = 0.0, 0
    return stop


def _reload_best(run: Run) -> None:
    """After a plateau, continue from the best dev weights (as DeepSpeech did)."""
    found = checkpoint.newest(run.config.save_dir, (checkpoint.BEST,), run.device, run.log)
    if found is not None:
        run.model.load_state_dict(found[1]["model"])
        run.optimizer.load_state_dict(found[1]["optimizer"])
    _set_learning_rate(run.optimizer, run.progress.learning_rate)


def build(config: Config, log: Callable[[str], None]) -> Run:
    alphabet = Alphabet.load(config.data.alphabet_config_path or None)
    device = choose_device(config.train.device)
    torch.manual_seed(config.train.random_seed)
    model = DeepSpeech(config.features, config.model, alphabet.n_classes).to(device)
    t = config.train
    optimizer = torch.optim.Adam(
        model.parameters(), lr=t.learning_rate, betas=(t.beta1, t.beta2), eps=t.epsilon
    )
    return Run(config, alphabet, device, model, optimizer, Progress(learning_rate=t.learning_rate), log)


def train(config: Config, log: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume training) as ``config`` says; then test the best model on the test files.

    Without --train_files but with --test_files, only the test runs (as DeepSpeech did).
    """
    cfg = config.data
    if not cfg.train_files:
        if not cfg.test_files:
            raise TrainingError("no --train_files given (nor --test_files to test a trained model)")
        return TrainResult(
            Progress(), config.load_dir, evaluate.test_checkpoint(config, config.load_dir, log)
        )
    _check_directories(config)
    run = build(config, log)
    train_split = load_split("train", cfg, run.alphabet, config.features, log, config.save_dir)
    dev_split = (
        load_split("dev", cfg, run.alphabet, config.features, log, config.save_dir) if cfg.dev_files else None
    )
    if dev_split is None and (config.train.early_stop or config.train.reduce_lr_on_plateau):
        log("warning: --early_stop and --reduce_lr_on_plateau need --dev_files; they are off")
    checkpoint.remove_temporary(config.save_dir)  # left by a process killed while saving
    resume(run)
    workers = data.default_workers(cfg.num_workers)
    summary_dir = (
        Path(config.train.summary_dir) if config.train.summary_dir else config.save_dir / "summaries"
    )
    with Summaries(summary_dir, log) as summaries:
        _epochs(run, train_split, dev_split, workers, summaries)
    plot_history(run.progress.history, config.save_dir / "loss.png")
    reports = evaluate.test_checkpoint(config, config.save_dir, log) if cfg.test_files else []
    return TrainResult(run.progress, config.save_dir, reports)


def _check_directories(config: Config) -> None:
    """--load_checkpoint_dir alone would save into the default checkpoint_dir, mixing runs: refuse that."""
    ckpt = config.checkpoint
    if (
        ckpt.load_checkpoint_dir
        and not ckpt.save_checkpoint_dir
        and ckpt.checkpoint_dir == DEFAULT_CHECKPOINTS
    ):
        raise TrainingError(
            "--load_checkpoint_dir needs --save_checkpoint_dir (or --checkpoint_dir): where this run saves"
        )


def _epochs(
    run: Run, train_split: Split, dev_split: Split | None, workers: int, summaries: Summaries
) -> None:
    progress, epochs = run.progress, run.config.train.epochs
    if progress.stopped_early and run.config.train.early_stop:
        run.log(f"Training stopped early after epoch {progress.epoch}; run without --early_stop to go on")
        return
    progress.stopped_early = False
    if progress.epoch >= epochs:
        run.log(f"Training already finished ({progress.epoch} epochs); raise --epochs to train more")
        return
    try:
        while progress.epoch < epochs:
            started = time.monotonic()
            train_epoch(run, train_split, workers, summaries)
            train_loss = progress.epoch_loss_sum / max(1, progress.epoch_loss_batches)
            dev = validate(run, dev_split, workers) if dev_split is not None else None
            stop = end_epoch(run, train_loss, dev, summaries)
            path = save(run)
            dev_text = (
                f", dev loss {dev.loss:.4f} WER {dev.wer:.3f} CER {dev.cer:.3f}" if dev is not None else ""
            )
            run.log(
                f"Epoch {progress.epoch}/{epochs}: train loss {train_loss:.4f}{dev_text} "
                f"({time.monotonic() - started:.1f} s), saved {path.name}"
            )
            if stop:
                break
    except KeyboardInterrupt:
        run.log(f"Interrupted: progress saved to {save(run)}; run the same command to resume")
        raise
