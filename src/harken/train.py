"""The training loop: epochs of CTC training, dev loss, checkpoints, schedule, early stop, test.

``train(config)`` is the whole of ``harken train``; it reads top to bottom: the entry point, the run
(``train_run``), the epoch loop (``run_epochs``), an epoch (``train_epoch``), a step (``train_step``, whose
parts are in ``step.py``), validation and the end of an epoch; then the run's state, its checkpoints and
its resumption.

Re-running the same configuration resumes from the newest checkpoint at the same epoch and batch, with the
optimizer, schedule and RNG state restored, so an interrupted run (Ctrl-C, kill -9, a lost machine)
continues as if it had not stopped. A SIGTERM (docker stop, Kubernetes, SLURM, torchrun's agent) saves
and stops as Ctrl-C does (``Terminated``, exit code 143).

Under torchrun the same loop runs in every process (``distributed.World``): --train_batch_size is the
global batch, of which each process trains its own slice; DDP averages the gradients; the loss of a step
is the mean over the samples of the whole global batch (of all --gradient_accumulation batches), so N
processes give the updates one process would with the same batch. Only rank 0 writes files and prints;
checkpoints count batches in global batches, so a run resumes on any number of processes. A SIGTERM
there stops every process at the same step boundary, which they agree on before each step (``Stop``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from harken import checkpoint, data, distributed, evaluate, schedule, step
from harken.alphabet import Alphabet
from harken.config import Config
from harken.data import Split, load_split
from harken.distributed import World
from harken.interruption import Stop, outlast_group_sigterm, terminable
from harken.model import DeepSpeech, choose_device, parameter_count
from harken.precision import choose_precision
from harken.step import OUT_OF_MEMORY, Learner, StepSettings
from harken.summary import ProgressBar, Summaries, plot_history


class TrainingError(RuntimeError):
    """A problem that stops training; one line for the user."""


def train(
    config: Config,
    log: Callable[[str], None] = print,
    environ: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train (or resume training) as ``config`` says; then test the best model on the test files.

    Without --train_files but with --test_files, only the test runs (as DeepSpeech did). Started by
    torchrun, this process joins the others (distributed.join reads torchrun's variables from
    ``environ``, the process environment ``harken train`` passes) and trains its share.
    """
    world = distributed.join(config.runtime.device, environ)
    stop = Stop(world.distributed)
    try:
        with terminable(stop):
            result = train_run(config, world, distributed.rank_log(world, log), stop)
    except BaseException:
        distributed.leave(world, wait=False)
        raise
    distributed.leave(world)
    return result


def train_run(config: Config, world: World, log: Callable[[str], None], stop: Stop) -> TrainResult:
    """This process's part of the run: the data, the model where it left off, the epochs, the test."""
    cfg = config.data
    if not cfg.train_files:
        if not cfg.test_files:
            raise TrainingError("no --train_files given (nor --test_files to test a trained model)")
        return TrainResult(
            Progress(), config.load_dir, test(config, config.load_dir, world, log), world.is_main
        )
    _check_directories(config, world)
    run = build(config, log, world)
    run.stop = stop
    train_split, dev_split = load_splits(run)
    if world.is_main:
        checkpoint.remove_temporary(config.save_dir)  # left by a process killed while saving
    resume(run)
    workers = data.default_workers(cfg.num_workers, world.local_size)
    if world.distributed:
        log(
            f"Training in {world.size} processes ({world.local_size} on this machine, {world.device.type}): "
            f"each takes about {cfg.train_batch_size / world.size:g} of every {cfg.train_batch_size} samples"
        )
    train_feed = _feed(run, train_split, workers, cfg.shuffle_batches)
    dev_feed = _feed(run, dev_split, workers) if dev_split is not None else None
    with Summaries(config.summary_dir, log, enabled=world.is_main) as summaries:
        run_epochs(run, train_feed, dev_feed, summaries)
    if world.is_main:
        plot_history(run.progress.history, config.save_dir / "loss.png")
    reports = test(config, config.save_dir, world, log) if cfg.test_files else []
    return TrainResult(run.progress, config.save_dir, reports, world.is_main)


def run_epochs(run: Run, train_feed: Feed, dev_feed: Feed | None, summaries: Summaries) -> None:
    """The epoch loop: train, validate, book-keep and save, until --epochs or an early stop."""
    progress, epochs = run.progress, run.config.train.epochs
    if _finished(run):
        return
    try:
        while progress.epoch < epochs:
            started = time.monotonic()
            train_epoch(run, train_feed, summaries)
            train_loss = progress.epoch_loss_sum / max(1, progress.epoch_loss_batches)
            dev = validate(run, dev_feed) if dev_feed is not None else None
            with run.stop.held():
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
        if run.stop.agreed(run.world):  # several processes: a SIGTERM during the last validation
            run.stop.stop()
    except KeyboardInterrupt:
        _save_interrupted(run)
        raise


def _finished(run: Run) -> bool:
    """Whether the checkpoint this run resumed has nothing left to train (saying so)."""
    progress, epochs = run.progress, run.config.train.epochs
    if progress.stopped_early and run.config.train.early_stop:
        run.log(f"Training stopped early after epoch {progress.epoch}; run without --early_stop to go on")
        return True
    progress.stopped_early = False
    if progress.epoch >= epochs:
        run.log(f"Training already finished ({progress.epoch} epochs); raise --epochs to train more")
        return True
    return False


def _save_interrupted(run: Run) -> None:
    """Ctrl-C or SIGTERM: save where the run stands (unless just saved) and say how to go on."""
    progress = run.progress
    run.stop.stopping = True  # a SIGTERM now would cut the save short
    if run.window_rng is not None and run.window_rng[:2] == (progress.epoch, progress.batch):
        torch.set_rng_state(run.window_rng[2])  # the interrupted step's dropout draws, undone
    saved = run.saved[1] if run.saved and run.saved[0] == _position(progress) else save(run)
    run.log(f"Interrupted: progress saved to {saved}; run the same command to resume")


def train_epoch(run: Run, feed: Feed, summaries: Summaries) -> None:
    """Train the rest of the current epoch, saving a checkpoint every checkpoint_secs."""
    cfg, progress = run.config, run.progress
    feed.order.set_epoch(progress.epoch, progress.batch)
    run.learner.trained.train()
    bar = ProgressBar(
        f"Epoch {progress.epoch + 1}/{cfg.train.epochs}",
        len(feed.split.batches),
        cfg.runtime.show_progressbar and run.world.is_main,
        done=progress.batch,
    )
    with bar:
        for window in _windows(run, feed):
            if run.stop.agreed(run.world):
                run.stop.stop()
            for batch in window:
                for _, reason in batch.failed:
                    run.log(f"warning: skipping {reason}")
            with run.stop.held():
                train_step(run, feed, window, summaries)
            bar.advance(len(window), loss=progress.epoch_loss_sum / max(1, progress.epoch_loss_batches))
            if time.monotonic() - run.last_save >= cfg.checkpoint.checkpoint_secs:
                save(run)


def train_step(run: Run, feed: Feed, window: list[data.Batch], summaries: Summaries) -> None:
    """One optimizer step over ``window`` (``step.optimizer_step``) at the scheduled learning rate,
    and its book-keeping."""
    progress, cfg = run.progress, run.config.train
    if cfg.learning_rate_schedule != "constant":
        batches = len(feed.split.batches)
        progress.learning_rate = schedule.learning_rate(cfg, progress.epoch, progress.batch, batches)
        schedule.apply(run.optimizer, progress.learning_rate)
    if run.world.distributed:
        distributed.seed_step(run.world, cfg.random_seed, progress.epoch, progress.batch)
    run.window_rng = (progress.epoch, progress.batch, torch.get_rng_state())
    where = f"epoch {progress.epoch + 1}, batch {progress.batch + 1}"
    try:
        loss, skipped = step.optimizer_step(run.learner, window, where, run.log)
    except step.OutOfMemory as error:
        raise TrainingError(str(error)) from None
    if skipped:
        names = ", ".join(str(feed.split.samples[i].path) for i in skipped[:3])
        run.log(f"warning: non-finite loss, samples left out of the update ({names} ...)")
    if loss is not None:
        progress.epoch_loss_sum += loss
        progress.epoch_loss_batches += 1
        progress.step += 1
        summaries.scalar("train/batch_loss", loss, progress.step)
    progress.batch += len(window)


def validate(run: Run, feed: Feed) -> evaluate.Report:
    """Loss, WER and CER on the dev set (the model in eval mode, no dropout; greedy decoding), each
    process taking its slice of every dev batch, the results gathered."""
    title, show = f"Validating {feed.split.name}", run.config.runtime.show_progressbar
    try:
        report = evaluate.run_shard(
            run.model, feed.loader, feed.split, run.alphabet, run.config.features, run.world,
            title, show,
        )  # fmt: skip
    except OUT_OF_MEMORY:
        report = None
    if report is None:
        raise TrainingError(
            f"out of memory on {run.device} validating {feed.split.name}: lower --dev_batch_size "
            f"(now {run.config.data.dev_batch_size})"
        )
    run.learner.trained.train()
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
    found = _newest(run, run.config.save_dir, (checkpoint.BEST,))
    if found is not None:
        run.model.load_state_dict(found[1]["model"])
        run.optimizer.load_state_dict(found[1]["optimizer"])
    schedule.apply(run.optimizer, run.progress.learning_rate)


def test(config: Config, directory: Path, world: World, log: Callable[[str], None]) -> list[evaluate.Report]:
    """The model --load_evaluate picks in ``directory`` on every --test_files CSV (evaluate's library
    function), the reports printed and every sample's result written (``evaluate.publish``)."""
    loaded = evaluate.load_for_test(config, directory, world, log)
    reports = evaluate.evaluate(loaded, config, world, log)
    evaluate.publish(reports, config, directory, world, log)
    return reports


def load_splits(run: Run) -> tuple[Split, Split | None]:
    """The training split (and its --augment_preview) and the dev split, when there is one."""
    config, world, log = run.config, run.world, run.log
    cfg, seed = config.data, config.train.random_seed
    rejected = config.save_dir if world.is_main else None
    train_split = load_split("train", cfg, run.alphabet, config.features, log, rejected, seed=seed)
    if cfg.augment_preview and world.is_main and train_split.dataset.augmenter is not None:
        from harken import augment

        written = augment.preview(
            train_split.dataset.augmenter, train_split.samples, Path(cfg.augment_preview), 8, seed
        )
        log(f"Wrote {len(written)} augmented training samples to listen to into {cfg.augment_preview}")
    dev_split = (
        load_split("dev", cfg, run.alphabet, config.features, log, rejected) if cfg.dev_files else None
    )
    if dev_split is None and (config.train.early_stop or config.train.reduce_lr_on_plateau):
        log("warning: --early_stop and --reduce_lr_on_plateau need --dev_files; they are off")
    return train_split, dev_split


@dataclass
class Progress:
    """Where training stands; stored in every checkpoint."""

    epoch: int = 0  # the epoch being trained (0-based)
    batch: int = 0  # (global) batches of that epoch already trained
    step: int = 0  # optimizer steps so far
    learning_rate: float = 0.0
    best_dev_loss: float = math.inf
    epochs_without_improvement: int = 0
    epoch_loss_sum: float = 0.0  # sum of this epoch's step losses so far
    epoch_loss_batches: int = 0  # ... and how many steps they are
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)  # one row per finished epoch


@dataclass
class Run:
    """One training run in this process: its settings, the learner, where it stands, and its saving."""

    config: Config
    alphabet: Alphabet
    learner: Learner
    progress: Progress
    log: Callable[[str], None]
    window_rng: tuple[int, int, torch.Tensor] | None = None  # (epoch, batch, RNG state) of a step under way
    last_save: float = field(default_factory=time.monotonic)
    saved: tuple[tuple[int, int, int], Path] | None = None  # (epoch, batch, step) of the last save, its path
    stop: Stop = field(default_factory=Stop)

    @property
    def model(self) -> DeepSpeech:
        return self.learner.model

    @property
    def optimizer(self) -> torch.optim.Adam:
        return self.learner.optimizer

    @property
    def world(self) -> World:
        return self.learner.world

    @property
    def device(self) -> torch.device:
        return self.learner.device

    @property
    def pieces(self) -> int:
        return self.learner.pieces

    @pieces.setter
    def pieces(self, pieces: int) -> None:
        self.learner.pieces = pieces

    def settle(self, config: Config) -> None:
        """Take ``config`` (its front end made definite by the checkpoint resumed) as the run's."""
        self.config = config
        self.learner.front_end = config.features


@dataclass
class Feed:
    """A split, its batch order (this process's slice of each batch) and its loader (workers kept)."""

    split: Split
    order: data.BatchOrder
    loader: DataLoader


@dataclass
class TrainResult:
    progress: Progress
    checkpoint_dir: Path
    test_reports: list[evaluate.Report]
    main: bool = True  # whether this process is rank 0 (the one that prints)


def build(config: Config, log: Callable[[str], None], world: World | None = None) -> Run:
    """The model, optimizer and precision of a run, in this process (wrapped in DDP with several)."""
    world = world if world is not None else World(device=choose_device(config.runtime.device))
    alphabet = Alphabet.for_model(config.data.alphabet_config_path or None, config.data.bytes_output_mode)
    torch.manual_seed(config.train.random_seed)
    model = DeepSpeech(config.features, config.model, alphabet.n_classes).to(world.device)
    t = config.train
    optimizer = torch.optim.Adam(
        model.parameters(), lr=t.learning_rate, betas=(t.beta1, t.beta2), eps=t.epsilon
    )
    precision = choose_precision(t.automatic_mixed_precision, world.device, log)
    net: nn.Module = distributed.wrap(model, world)
    settings = StepSettings.of(config)
    learner = Learner(model, optimizer, config.features, settings, world, net, precision)
    return Run(config, alphabet, learner, Progress(learning_rate=t.learning_rate), log)


def _feed(run: Run, split: Split, workers: int, shuffle: bool = False) -> Feed:
    world = run.world
    order = data.BatchOrder(
        split.batches, 0, run.config.train.random_seed, shuffle, rank=world.rank, world=world.size
    )
    if split.dataset.augmenter is not None:
        order.epochs = run.config.train.epochs  # keys carry (epoch, clock): the dataset augments
    pin = run.device.type == "cuda"
    loader = data.loader(split.dataset, order, workers, pin=pin, persistent=True)
    if workers > 0 and loader.worker_init_fn is None:
        loader.worker_init_fn = outlast_group_sigterm
    return Feed(split, order, loader)


def _windows(run: Run, feed: Feed) -> Iterator[list[data.Batch]]:
    """The rest of this epoch's batches (this process's slices), --gradient_accumulation at a time."""
    accumulation, total = run.config.train.gradient_accumulation, len(feed.split.batches)
    window: list[data.Batch] = []
    for batch in feed.loader:
        window.append(batch)
        if len(window) == accumulation or run.progress.batch + len(window) >= total:
            yield window
            window = []


def _payload(run: Run) -> dict[str, Any]:
    payload = checkpoint.make_payload(
        run.config, run.alphabet, run.model.state_dict(), run.optimizer.state_dict(), asdict(run.progress)
    )
    if run.learner.precision.scaler is not None:
        payload["scaler"] = run.learner.precision.scaler.state_dict()
    return payload


def save(run: Run, kind: str = checkpoint.TRAIN) -> Path:
    """Write a checkpoint (rank 0 only; every process gets the path it has). A SIGTERM does not cut it
    short (the write is atomic anyway: an interrupted one leaves the previous checkpoints as they were)."""
    path = run.config.save_dir / f"{kind}-{run.progress.step}.pt"
    with run.stop.held():
        if run.world.is_main:
            keep = run.config.checkpoint.max_to_keep if kind == checkpoint.TRAIN else 1
            path = checkpoint.save(run.config.save_dir, kind, run.progress.step, _payload(run), keep)
        run.last_save = time.monotonic()
        if kind == checkpoint.TRAIN:
            run.saved = (_position(run.progress), path)
    return path


def _position(progress: Progress) -> tuple[int, int, int]:
    return progress.epoch, progress.batch, progress.step


def _newest(run: Run, directory: Path, kinds: tuple[str, ...]) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable checkpoint of ``kinds``, read by rank 0 and handed to every process (so that
    the other machines of a multi-node run need not see rank 0's disk)."""
    where = "cpu" if run.world.distributed else run.device
    return distributed.from_main(run.world, lambda: checkpoint.newest(directory, kinds, where, run.log))


def resume(run: Run) -> None:
    """Continue this run, or start it from --load_checkpoint_dir, or initialise a new model.

    The save directory is this run's own: when it holds checkpoints, the newest is resumed whatever
    --load_train says (so re-running a command always continues it). Only a run that has not saved
    anything yet starts from --load_checkpoint_dir (or checkpoint_dir) as --load_train chooses.
    """
    cfg = run.config
    found = _newest(run, cfg.save_dir, (checkpoint.TRAIN, checkpoint.BEST))
    if found is not None:
        run.settle(checkpoint.resolve_front_end(cfg, found[1]))
        _continue(run, *found)
        return
    mode = cfg.checkpoint.load_train
    kinds = checkpoint.kinds_for(mode, training=True)
    found = _newest(run, cfg.load_dir, kinds) if kinds else None
    cfg = checkpoint.resolve_front_end(cfg, found[1] if found else None)
    run.settle(cfg)
    if found is None:
        if mode in ("last", "best"):
            raise TrainingError(f"{cfg.load_dir}: no {mode} checkpoint to start from (--load_train {mode})")
        run.log(f"Initialising a new model ({parameter_count(run.model):,} parameters)")
        return
    path, payload = found
    drop = cfg.checkpoint.drop_source_layers
    if drop == 0:
        checkpoint.check_compatible(path, payload, cfg, run.alphabet)
        run.model.load_state_dict(payload["model"])
        if payload.get("optimizer"):
            run.optimizer.load_state_dict(payload["optimizer"])
    else:
        _transfer(run, path, payload, drop)
    schedule.apply(run.optimizer, run.progress.learning_rate)
    run.log(f"Starting from {path} (saving to {cfg.save_dir})")


def _transfer(run: Run, path: Path, payload: dict[str, Any], drop: int) -> None:
    """Fine-tuning with --drop_source_layers: the source's first layers, freshly initialised last ones
    (the output layer among them, so the alphabet may differ); the optimizer starts afresh."""
    kept, dropped = checkpoint.load_layers(run.model, path, payload, drop)
    old = checkpoint.stored_alphabet(payload)
    note = "" if old == run.alphabet else f"; alphabet {len(old)} -> {len(run.alphabet)} symbols"
    run.log(f"Kept {', '.join(kept) or 'no layer'} of {path}; re-initialised {', '.join(dropped)}{note}")


def _continue(run: Run, path: Path, payload: dict[str, Any]) -> None:
    """Restore weights, optimizer, progress and RNG state of this run's checkpoint."""
    checkpoint.check_compatible(path, payload, run.config, run.alphabet)
    run.model.load_state_dict(payload["model"])
    if payload.get("optimizer"):
        run.optimizer.load_state_dict(payload["optimizer"])
    if run.learner.precision.scaler is not None and payload.get("scaler"):
        run.learner.precision.scaler.load_state_dict(payload["scaler"])
    known = {f.name for f in fields(Progress)}
    run.progress = Progress(**{k: v for k, v in payload["progress"].items() if k in known})
    if run.progress.learning_rate <= 0:  # an imported model carries no training progress
        run.progress.learning_rate = run.config.train.learning_rate
    schedule.apply(run.optimizer, run.progress.learning_rate)
    checkpoint.restore_rng(payload, cuda=not run.world.distributed)
    run.log(
        f"Resuming from {path}: epoch {run.progress.epoch + 1}, batch {run.progress.batch}, "
        f"step {run.progress.step}"
    )
    if run.progress.learning_rate != run.config.train.learning_rate:
        run.log(f"  (learning rate {run.progress.learning_rate:g} from the checkpoint, not --learning_rate)")


def _check_directories(config: Config, world: World) -> None:
    """--load_checkpoint_dir alone would save into the default checkpoint_dir, mixing runs: refuse that.
    Also refuse what several processes cannot do."""
    ckpt = config.checkpoint
    saves_to_default = not ckpt.save_checkpoint_dir and not ckpt.checkpoint_dir
    if ckpt.load_checkpoint_dir and saves_to_default:
        raise TrainingError(
            "--load_checkpoint_dir needs --save_checkpoint_dir (or --checkpoint_dir): where this run saves"
        )
    if world.distributed and config.train.auto_batch_size:
        raise TrainingError(
            "--auto_batch_size works in one process; under torchrun lower --train_batch_size "
            "(or raise --gradient_accumulation) instead"
        )
    if config.data.train_batch_size < world.size:
        raise TrainingError(
            f"--train_batch_size {config.data.train_batch_size} is the global batch, shared by {world.size} "
            f"processes: give at least {world.size}"
        )
