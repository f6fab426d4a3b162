"""What a SIGTERM does to a training run (``docker stop``, Kubernetes, SLURM, torchrun's agent): what
Ctrl-C does. ``Terminated`` is the interruption (``cli.main`` prints its reason and exits with its code),
``Stop`` decides where a run may stop (never inside a step or a checkpoint write; with several processes,
at a step boundary they agree on), ``terminable`` installs it for the run's duration, and
``outlast_group_sigterm`` keeps DataLoader workers alive through a SIGTERM sent to the whole process group,
so that the save is not cut short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from harken import distributed
from harken.distributed import World


class Terminated(KeyboardInterrupt):
    """A SIGTERM during training: handled as Ctrl-C is (progress saved, then stop), exit code 143 (128 +
    SIGTERM, what a shell reports for a process a SIGTERM ended). ``cli.main`` prints the reason."""

    exit_code = 143
    reason = "terminated (SIGTERM): progress saved; run the same command to resume"


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler that does nothing (SIG_IGN would make a signal already pending warn)."""


class Stop:
    """What a SIGTERM does while ``train()`` runs (``terminable`` installs ``handle``).

    In one process the handler raises ``Terminated`` at once, as Ctrl-C raises KeyboardInterrupt, except
    inside ``held()`` sections (an optimizer step and its book-keeping, a checkpoint write), where it is
    raised as the section ends: the saved state is always that of a step boundary. With several processes
    the handler only notes the request: each process would otherwise stop at its own point, leaving the
    others waiting in a collective for it (with NCCL, until the agent kills them, unsaved). So before every
    step they ask ``agreed()``, a sum over all processes (every process asks at the same points), and all
    stop at the same step boundary, rank 0 saving once. Once stopping, further SIGTERMs are ignored (a
    second one must not cut the save short). A SIGTERM often reaches the DataLoader workers too (torchrun's
    agent and SLURM signal the whole process group): they outlast it (``outlast_group_sigterm``), and
    once one came, a worker's death is no longer reported as an error at any moment (SIGCHLD is quietened,
    so that the save is not cut short by one).
    """

    def __init__(self, distributed: bool = False) -> None:
        self.distributed = distributed
        self.requested = False  # a SIGTERM arrived
        self.stopping = False  # an interruption is being handled: later SIGTERMs are ignored
        self.holding = 0  # depth of held() sections
        self.child_handler: Any = None  # SIGCHLD's handler before handle() quietened it

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            return
        if not self.requested and hasattr(signal, "SIGCHLD"):
            self.child_handler = signal.signal(signal.SIGCHLD, _ignore_signal)
        self.requested = True
        if not self.distributed and not self.holding:
            self.stop()

    def stop(self) -> None:
        self.stopping = True
        raise Terminated

    def agreed(self, world: World) -> bool:
        """Whether to stop here: whether a SIGTERM came to this process (to any, with several)."""
        if not world.distributed:
            return self.requested
        return distributed.all_sum(world, [float(self.requested)])[0] > 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A section a SIGTERM does not cut: one that came during it stops training as it ends."""
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if self.requested and not (self.holding or self.stopping or self.distributed):
            self.stop()


@contextlib.contextmanager
def terminable(stop: Stop) -> Iterator[None]:
    """``stop.handle`` handles SIGTERM inside; the previous handlers are restored after. Only the main
    thread can set signal handlers: elsewhere (training in a thread) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop.handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if stop.requested and hasattr(signal, "SIGCHLD"):
            child = stop.child_handler
            signal.signal(signal.SIGCHLD, signal.SIG_DFL if child is None else child)


def outlast_group_sigterm(worker_id: int) -> None:
    """In a DataLoader worker (its worker_init_fn): a SIGTERM sent to the whole process group or job
    (torchrun's agent stops each training process with killpg; SLURM signals every process of a job)
    leaves it running, as Ctrl-C does, so that the training process can still load the batches it needs
    before it stops (and then stops it); one sent by the training process itself (the loader's last
    resort), or once that process is gone, ends it at once. SIGTERM is blocked and taken by a thread that
    learns the sender (sigwaitinfo); where that does not exist (macOS), nothing changes."""
    if not hasattr(signal, "sigwaitinfo"):
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by every later thread

    def watch() -> None:
        while True:
            sender = signal.sigwaitinfo({signal.SIGTERM}).si_pid
            if sender == parent or os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="harken-sigterm", daemon=True).start()


__all__ = ["Stop", "Terminated", "outlast_group_sigterm", "terminable"]
