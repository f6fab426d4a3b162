"""Several processes training one model: torchrun's environment, the process group, and the few
collectives the training loop needs. In a single process every function here is a no-op.

``torchrun`` (single node or many, with c10d rendezvous) starts one process per GPU and tells each its
place in the environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``. ``join`` reads them and joins the process group: NCCL on CUDA, gloo on
the CPU. Without them (``WORLD_SIZE`` absent or 1) harken runs as one process and nothing is initialised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from harken.model import choose_device

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the processes training together (a world of one by default)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this machine
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owned: bool = False  # whether join() created the process group (and leave() destroys it)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def join(device_name: str = "auto", environ: Mapping[str, str] | None = None) -> World:
    """This process's World: from torchrun's environment variables (``environ``: the process's
    environment, which ``harken train`` passes) when there are several processes (initialising the
    process group unless the caller already did), else a world of one on ``device_name``. Under torchrun
    each process takes ``cuda:<LOCAL_RANK>`` (or the CPU)."""
    env = environ or {}
    if dist.is_available() and dist.is_initialized():
        size, rank = dist.get_world_size(), dist.get_rank()
    else:
        size, rank = int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0"))
    if size <= 1:
        return World(device=choose_device(device_name))
    local_rank = int(env.get("LOCAL_RANK", "0"))
    local_size = int(env.get("LOCAL_WORLD_SIZE", "1"))
    device = _process_device(device_name, local_rank)
    owned = not dist.is_initialized()
    if owned:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return World(rank, size, local_rank, local_size, device, owned)


def _process_device(name: str, local_rank: int) -> torch.device:
    device = choose_device(name)
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise ValueError(
            f"--device {name}: under torchrun each process takes cuda:<LOCAL_RANK>; pass --device cuda"
        )
    if local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"LOCAL_RANK {local_rank}, but this machine has {torch.cuda.device_count()} GPUs: "
            "start at most that many processes per node (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def leave(world: World, wait: bool = True) -> None:
    """Wait for every process (unless this one is failing: ``wait`` False), then leave the process
    group if join() created it."""
    if world.distributed and dist.is_initialized():
        if wait:
            dist.barrier()
        if world.owned:
            dist.destroy_process_group()


def rank_log(world: World, log: Callable[[str], None]) -> Callable[[str], None]:
    """Rank 0 prints everything; the others only their warnings and errors, marked with their rank."""
    if world.is_main:
        return log

    def warnings_only(line: str) -> None:
        if line.startswith(("warning", "error")):
            log(f"[rank {world.rank}] {line}")

    return warnings_only


def shard(items: list[T], rank: int, size: int) -> list[T]:
    """Process ``rank``'s contiguous share of ``items``: sizes differ by at most one, the first ranks
    take the extra items (so concatenating the shards in rank order gives ``items`` back)."""
    base, extra = divmod(len(items), size)
    start = rank * base + min(rank, extra)
    return items[start : start + base + (1 if rank < extra else 0)]


def all_sum(world: World, values: Iterable[float]) -> list[float]:
    """Element-wise sums of ``values`` over all processes (float64)."""
    numbers = [float(v) for v in values]
    if not world.distributed:
        return numbers
    tensor = torch.tensor(numbers, dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def all_gather(world: World, value: T) -> list[T]:
    """Every process's ``value`` (any picklable object), in rank order."""
    if not world.distributed:
        return [value]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered


def from_main(world: World, produce: Callable[[], T]) -> T:
    """``produce()`` run on rank 0 only, its result handed to every process. An exception it raises is
    raised in every process (so none waits for a result that will never come)."""
    if not world.distributed:
        return produce()
    box: list[Any] = [None]
    if world.is_main:
        try:
            box[0] = (produce(), None)
        except Exception as error:  # noqa: BLE001 - re-raised below, in every process
            box[0] = (None, error)
    dist.broadcast_object_list(box, src=0, device=world.device if world.device.type == "cuda" else None)
    value, failure = box[0]
    if failure is not None:
        raise failure
    return value


def wrap(model: nn.Module, world: World) -> nn.Module:
    """The model as each process trains it: DistributedDataParallel (which averages the gradients of
    all processes during backward) when there are several, else the model itself."""
    if not world.distributed:
        return model
    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


@contextlib.contextmanager
def no_sync(net: nn.Module, skip: bool) -> Iterator[None]:
    """With ``skip``, the backward passes inside accumulate gradients without averaging them (DDP's
    no_sync: gradient accumulation communicates once, on its last batch)."""
    if skip and isinstance(net, DistributedDataParallel):
        with net.no_sync():
            yield
    else:
        yield


def average_gradients(world: World, parameters: Iterable[nn.Parameter]) -> None:
    """Average the gradients over all processes by hand: for an accumulation whose last batch had no
    backward pass, so DDP never synchronised the ones before it (rare)."""
    if not world.distributed:
        return
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
        parameter.grad.div_(world.size)


def seed_step(world: World, seed: int, epoch: int, batch: int) -> None:
    """Seed this process's dropout for the step at (``epoch``, ``batch``) from (seed, epoch, batch, rank):
    the processes draw different masks and a resumed run (on as many processes) draws the same ones. (A
    single process keeps one stream, stored in its checkpoints, and needs no seeding.)"""
    mixed = (seed * 1_000_003 + epoch) * 1_000_003 + batch
    torch.manual_seed((mixed * 1_009 + world.rank) % 2**63)
