"""Live streams' model steps gathered into batched calls (``inference.step_streams``).

A stream's step first takes its audio up to the model (``Utterances.take``: resampling, endpointing,
features); the batcher then holds it until the batch in flight has finished, or ``wait`` seconds when
none is, so that the steps of every stream that is ready join one call: the LSTM's weights are read once
per step for all of them instead of once per stream. Up to ``runners`` batches run at once on the
service's stream pool (one per worker, so every core has work: the steps' resampling, features and
decoding run in Python beside the model call); the next batch gathers while they run. A stream whose
step fails gets its own error; the others in its batch go on. A lone stream waits at most ``wait`` (a
few ms).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field

from harken.inference import step_streams
from harken.server.utterances import Event, Utterances


@dataclass
class _Step:
    utterances: Utterances
    pcm: bytes | None  # None: the end of the stream (its last final)
    done: asyncio.Future[list[Event]]


@dataclass
class Batcher:
    """Steps of many streams, run ``max_batch`` at most to a model call, on ``pool``."""

    pool: Executor
    wait: float = 0.002  # seconds a step waits for others when no batch is in flight
    max_batch: int = 64
    runners: int = 1  # batches run at once (the pool's workers)
    pending: list[_Step] = field(default_factory=list)
    active: int = 0  # runners started and not yet done
    batches: int = 0  # batches run, and the steps they held (for the service's counters)
    steps: int = 0

    async def step(self, utterances: Utterances, pcm: bytes) -> list[Event]:
        """Take ``pcm`` into ``utterances`` and run the model on it with the other streams ready now:
        the finals it ends and the partial it changes, as ``Utterances.feed`` gives them alone."""
        return await self._queue(utterances, pcm)

    async def finish(self, utterances: Utterances) -> list[Event]:
        """The end of the stream, with the other streams ending now (their last windows in one call): its
        last finals, as ``Utterances.finish`` gives them alone."""
        return await self._queue(utterances, None)

    async def _queue(self, utterances: Utterances, pcm: bytes | None) -> list[Event]:
        done: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self.pending.append(_Step(utterances, pcm, done))
        if self.active < self.runners:
            self.active += 1
            asyncio.get_running_loop().create_task(self._run())
        return await done

    async def _run(self) -> None:
        """Run batches until no step is waiting."""
        loop = asyncio.get_running_loop()
        batch: list[_Step] = []
        try:
            if self.wait > 0:
                await asyncio.sleep(self.wait)  # let the other streams' steps join this one's
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    results = await loop.run_in_executor(self.pool, run_batch, batch, self.max_batch)
                except Exception as error:  # the pool is shut down: every step of the batch fails
                    results = [error] * len(batch)
                self.batches, self.steps = self.batches + 1, self.steps + len(batch)
                for item, result in zip(batch, results, strict=True):
                    _settle(item, result)
        finally:
            self.active -= 1
            left = [*batch, *self.pending] if self.active == 0 else batch  # after a cancellation
            for item in left:
                _settle(item, RuntimeError("the service is stopping"))
            if self.active == 0:
                self.pending = []


def _settle(item: _Step, result: list[Event] | Exception) -> None:
    if item.done.done():
        return
    if isinstance(result, Exception):
        item.done.set_exception(result)
    else:
        item.done.set_result(result)


def run_batch(batch: list[_Step], max_batch: int) -> list[list[Event] | Exception]:
    """On a worker thread: every step's audio taken (every ending stream's end), one model step for the
    steps and one for the endings, then the partials and the last finals."""
    results: list[list[Event] | Exception] = []
    for item in batch:
        try:
            results.append(
                item.utterances.take(item.pcm) if item.pcm is not None else item.utterances.flush()
            )
        except Exception as error:
            results.append(error)
    for final in (False, True):
        chosen = [i for i, r in enumerate(results) if (batch[i].pcm is None) == final and isinstance(r, list)]
        failed: dict[int, Exception] = {}
        step_streams([batch[i].utterances.stream for i in chosen], final, max_batch, failed)
        for position, index in enumerate(chosen):
            events = results[index]
            assert isinstance(events, list)
            if position in failed:
                results[index] = failed[position]
                continue
            utterances = batch[index].utterances
            try:
                results[index] = events + (utterances.last_final() if final else utterances.partial())
            except Exception as error:
                results[index] = error
    return results
