"""The service's batched stream steps (server/batcher.py): the same events as each stream alone, fewer
model calls, and one stream's failure kept to itself."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_server import WAV, tiny_model

from harken import audio
from harken.inference import Model
from harken.server.batcher import Batcher
from harken.server.utterances import Endpointing, Event, Utterances

__all__ = ["tiny_model"]  # the fixture, shared with test_server


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> Model:
    """test_server's untrained n_hidden 32 model, exported (its outputs are still the same for the same
    input)."""
    return Model(tiny_model)


def _recordings() -> list[bytes]:
    """Six streams' audio: LDC93S1 from different offsets, some with a pause inside, at 16 and 8 kHz."""
    speech = audio.to_pcm16(audio.read(WAV, 16000))
    pause = np.zeros(12000, np.int16)
    pieces = [speech[i * 2000 :] for i in range(3)] + [np.concatenate([speech, pause, speech[:20000]])] * 2
    return [p.tobytes() for p in pieces] + [audio.to_pcm16(audio.read(WAV, 8000)).tobytes()]


RATES = [16000] * 5 + [8000]


def _alone(model: Model, pcm: bytes, rate: int, size: int) -> list[Event]:
    utterances = Utterances(model, rate, Endpointing(endpoint_ms=300))
    events = [e for i in range(0, len(pcm), size) for e in utterances.feed(pcm[i : i + size])]
    return events + utterances.finish()


async def _together(model: Model, batcher: Batcher, size: int) -> list[list[Event]]:
    async def one(pcm: bytes, rate: int) -> list[Event]:
        utterances = Utterances(model, rate, Endpointing(endpoint_ms=300))
        events = []
        for i in range(0, len(pcm), size):
            events += await batcher.step(utterances, pcm[i : i + size])
            await asyncio.sleep(0)
        return events + await batcher.finish(utterances)  # the streams end together: one call

    return await asyncio.gather(*(one(p, r) for p, r in zip(_recordings(), RATES, strict=True)))


@pytest.mark.parametrize(("size", "runners"), [(640, 1), (3200, 1), (640, 2)])
def test_streams_stepped_together_give_what_each_gives_alone(model: Model, size: int, runners: int) -> None:
    expected = [_alone(model, pcm, rate, size) for pcm, rate in zip(_recordings(), RATES, strict=True)]
    with ThreadPoolExecutor(2) as pool:
        batcher = Batcher(pool, wait=0.002, max_batch=4, runners=runners)
        got = asyncio.run(_together(model, batcher, size))
    assert got == expected
    assert any(e["type"] == "final" and e["text"] for events in got for e in events)
    assert batcher.steps == sum(-(-len(p) // size) for p in _recordings()) + len(RATES)  # and the ends
    assert batcher.batches * 2 <= batcher.steps  # steps ran several to a batch (at most 4)


def test_a_failing_stream_fails_alone(model: Model) -> None:
    class Broken(Utterances):
        def take(self, pcm: bytes) -> list[Event]:
            raise RuntimeError("broken stream")

    async def run(batcher: Batcher) -> list[object]:
        good = Utterances(model, 16000)
        bad = Broken(model, 16000)
        pcm = _recordings()[0][:32000]
        return await asyncio.gather(
            batcher.step(good, pcm), batcher.step(bad, pcm), batcher.step(good, pcm), return_exceptions=True
        )

    with ThreadPoolExecutor(1) as pool:
        first, second, third = asyncio.run(run(Batcher(pool, wait=0.01)))
    assert isinstance(second, RuntimeError) and str(second) == "broken stream"
    assert isinstance(first, list) and isinstance(third, list)


def test_a_shut_pool_fails_the_steps_instead_of_hanging(model: Model) -> None:
    pool = ThreadPoolExecutor(1)
    pool.shutdown()

    async def run() -> object:
        step = Batcher(pool).step(Utterances(model, 16000), b"\0\0" * 1600)
        return (await asyncio.gather(asyncio.wait_for(step, 30), return_exceptions=True))[0]

    assert isinstance(asyncio.run(run()), RuntimeError)
