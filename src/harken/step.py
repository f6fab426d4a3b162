"""One optimizer step of training: a window of --gradient_accumulation batches (this process's slices of
each), forward in the training precision, CTC loss in float32, backward, the gradients of all processes
combined, the update.

A step's parts, in the order they run: ``optimizer_step`` (the step, retried in smaller pieces after a GPU
out-of-memory error under --auto_batch_size), ``accumulate`` (every piece's forward and backward pass,
then the update), ``piece_backward`` (one piece, its loss agreed between the processes) and ``ctc_losses``
(the forward pass and the per-sample loss).

The loss of a step is the mean over the samples of the whole global batch (of all accumulated batches), so
N processes, or a batch trained in pieces, give the updates one process would with the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from harken import data, distributed, features
from harken.config import Config, FeatureConfig
from harken.distributed import World
from harken.model import DeepSpeech
from harken.precision import Precision

OUT_OF_MEMORY = torch.cuda.OutOfMemoryError


class OutOfMemory(RuntimeError):
    """A step that does not fit the device (and may not be split further); one line naming the flags."""


@dataclass(frozen=True)
class StepSettings:
    """The options a step follows."""

    train_batch_size: int = 1  # the global batch
    dev_batch_size: int = 1  # named in the out-of-memory advice
    gradient_accumulation: int = 1
    clip_grad_norm: float = 0.0
    auto_batch_size: bool = False

    @classmethod
    def of(cls, config: Config) -> StepSettings:
        d, t = config.data, config.train
        return cls(
            d.train_batch_size, d.dev_batch_size, t.gradient_accumulation, t.clip_grad_norm, t.auto_batch_size
        )


@dataclass
class Learner:
    """The model as it learns: its weights, the optimizer and precision that update them, the processes
    sharing each step (DDP wraps the model when there are several) and the pieces a batch is trained in."""

    model: DeepSpeech
    optimizer: torch.optim.Adam
    front_end: FeatureConfig
    settings: StepSettings = field(default_factory=StepSettings)
    world: World = field(default_factory=World)
    net: nn.Module | None = None  # the model as trained: wrapped in DDP when there are several processes
    precision: Precision = field(default_factory=Precision)
    pieces: int = 1  # --auto_batch_size: every batch is trained in this many pieces

    @property
    def trained(self) -> nn.Module:
        return self.net if self.net is not None else self.model

    @property
    def device(self) -> torch.device:
        return self.world.device


def optimizer_step(
    learner: Learner, window: list[data.Batch], where: str, log: Callable[[str], None]
) -> tuple[float | None, list[int]]:
    """One optimizer step over ``window``: this process's slices of --gradient_accumulation batches
    (``where``: the epoch and batch, for messages).

    Returns the mean per-sample loss over the whole window (None: no update, nothing usable) and the
    indices of this process's samples left out because their piece's loss was not finite.
    """
    rng = torch.get_rng_state()
    while True:
        try:
            return accumulate(learner, window)
        except OUT_OF_MEMORY:
            pass  # handled outside the except block, so that the failed pass's tensors are freed
        learner.optimizer.zero_grad(set_to_none=True)
        split_after_out_of_memory(learner, max(len(batch) for batch in window), where, log)
        torch.set_rng_state(rng)


def split_after_out_of_memory(learner: Learner, largest: int, where: str, log: Callable[[str], None]) -> None:
    """After a GPU out-of-memory error: stop with a message naming the flags, or (--auto_batch_size)
    train every batch in twice as many pieces: the same updates, in more passes."""
    s, device = learner.settings, learner.device
    if not s.auto_batch_size or learner.pieces >= largest:
        raise OutOfMemory(
            f"out of memory on {device} training {math.ceil(largest / learner.pieces)} samples at a time "
            f"({where}): lower --train_batch_size (now {s.train_batch_size}; raise --gradient_accumulation, "
            f"now {s.gradient_accumulation}, to keep the effective batch) or pass --auto_batch_size; "
            f"validation takes --dev_batch_size (now {s.dev_batch_size})"
        )
    learner.pieces *= 2
    if device.type == "cuda":
        torch.cuda.empty_cache()
    log(
        f"warning: out of memory on {device} ({where}): training every batch in {learner.pieces} pieces "
        f"of at most {math.ceil(largest / learner.pieces)} samples from now on (--auto_batch_size; "
        f"the updates stay those of --train_batch_size {s.train_batch_size})"
    )


def accumulate(learner: Learner, window: list[data.Batch]) -> tuple[float | None, list[int]]:
    """Forward and backward of every piece of ``window``, then the update.

    Each piece's backward pass takes its loss sum × processes / (train_batch_size × accumulation); DDP
    averages over the processes, so the gradient is that of the global loss sum / the nominal sample
    count; the update rescales it to the true count (fewer in an epoch's last batch or when samples
    failed): the gradient of the mean per-sample CTC loss, whatever the number of processes or pieces.
    """
    world, s = learner.world, learner.settings
    learner.optimizer.zero_grad(set_to_none=True)
    nominal = s.train_batch_size * s.gradient_accumulation
    pieces = [piece for batch in window for piece in batch.split(learner.pieces)]
    total, count, synced, skipped = 0.0, 0, not world.distributed, []
    for number, piece in enumerate(pieces):
        last = number == len(pieces) - 1
        with distributed.no_sync(learner.trained, skip=not last):
            loss_sum, samples, used = piece_backward(learner, piece, world.size / nominal, last)
        if used:
            total, count, synced = total + loss_sum, count + samples, synced or last
        elif samples:
            skipped.extend(piece.indices)
    if count == 0:
        return None, skipped
    if not synced:
        distributed.average_gradients(world, learner.model.parameters())
    learner.precision.step(learner.optimizer, learner.model, nominal / count, s.clip_grad_norm)
    return total / count, skipped


def piece_backward(learner: Learner, piece: data.Batch, scale: float, last: bool) -> tuple[float, int, bool]:
    """One piece's forward and (when its loss, summed over all processes, is finite) backward pass.

    Returns that global loss sum, the global sample count, and whether the backward passes ran. With
    several processes, one with no sample in the piece runs a placeholder forward pass (DDP's forward may
    communicate), and on the last piece its backward pass weighted 0, so that DDP averages the others'.
    """
    world = learner.world
    batch = piece if len(piece) or not world.distributed else placeholder(learner.front_end)
    local = ctc_losses(learner, batch.to(learner.device)).sum() if batch.lengths.numel() else None
    value = float(local.detach()) if local is not None and len(piece) else 0.0
    total, samples = distributed.all_sum(world, [value, len(piece)])
    if samples == 0 or not math.isfinite(total):
        return total, int(samples), False
    if local is not None and (len(piece) or last):
        learner.precision.backward(local * (scale if len(piece) else 0.0))
    return total, int(samples), True


def ctc_losses(learner: Learner, batch: data.Batch) -> torch.Tensor:
    """Per-sample CTC losses [batch]: the forward pass in the training precision (through DDP with
    several processes), the loss in float32."""
    frames = batch.frames()  # [batch, time, n_mfcc] (computed here with --device_features)
    windows = features.model_input(frames, batch.lengths, learner.front_end)  # [batch, time, n_input]
    with learner.precision.autocast():
        log_probs, lengths, _ = learner.trained(windows, batch.lengths)
    return F.ctc_loss(
        log_probs.float().transpose(0, 1),  # [time, batch, n_classes]
        batch.labels,
        lengths,
        batch.label_lengths,
        blank=learner.model.n_classes - 1,
        reduction="none",
        zero_infinity=True,
    )


def placeholder(front_end: FeatureConfig) -> data.Batch:
    """One silent frame with one label and no sample index (it counts as no sample)."""
    one = torch.ones(1, dtype=torch.int64)
    silence = torch.zeros(1, 1, front_end.n_mfcc)
    return data.Batch(silence, one, torch.zeros(1, 1, dtype=torch.int64), one.clone(), [], [])
