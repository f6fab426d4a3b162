"""WebSocket /v1/stream: one connection's life.

The client names its sample rate (``?sample_rate=`` or a first text message ``{"sample_rate": 16000}``),
then sends binary 16-bit little-endian PCM in messages of any size, and ends with ``{"eof": 1}`` (or just
closes). The server sends ``{"type": "partial", "text", "time"}`` whenever the current utterance's text
changes (``time``: seconds of audio decoded so far), ``{"type": "final", ...}`` when voice activity says
an utterance has ended, a last final at the end, and then closes (1000). A text message
``{"hot_words": "phrase:boost,..."}`` between audio messages changes the hot phrases: from the utterance
under way if nothing has been heard in it yet, else from the next one ("" clears them). A limit that
ends a stream first sends ``{"type": "error", "error"}`` and the last final, then closes with 1008 (1001
when the service shuts down, 1003 for a message that is not the protocol's, 1011 when it fails).

Two tasks per connection: one reads messages into a bounded buffer (so a client that sends faster than
decoding keeps its audio in TCP, not in the server), the other takes everything buffered at once and
decodes it on the service's stream pool, so a stream that falls behind catches up in larger steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import Message
from starlette.websockets import WebSocket

from harken.server.service import DecodeOptions, ServiceError, decode_options, release_memory
from harken.server.utterances import Event, Utterances

if TYPE_CHECKING:
    from harken.server.service import Service

MAX_BUFFERED = 4 * 1024 * 1024  # bytes of audio a connection may have waiting for its decoder
STEP_SECONDS = 2.0  # most audio one decoding step takes from the buffer
RATES = range(4000, 192001)
CHANGES_AT_ONCE = 4  # hot-word changes a stream may make before its audio pays for them:
SECONDS_PER_CHANGE = 2.0  # then one per this much audio (each change may build a decoder and a trie)
CLOSE_CODES = {"eof": 1000, "shutdown": 1001, "protocol": 1003, "failed": 1011}  # else 1008


def stream_options(query: Mapping[str, str]) -> tuple[dict[str, str], int | None]:
    """The decoding fields and the sample rate (None: the first message gives it) of a stream's URL;
    ValueError with one line when the rate is not one."""
    rate = query.get("sample_rate")
    fields = {key: value for key, value in query.items() if key not in ("sample_rate", "api_key")}
    return fields, None if rate is None else _rate(rate)


def _rate(value: Any) -> int:
    digits = isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10
    if isinstance(value, bool) or not (isinstance(value, int) or digits):
        raise ValueError(f"sample_rate {value!r}: expected a whole number of Hz")
    if int(value) not in RATES:
        raise ValueError(f"sample_rate {value}: expected 4000-192000 Hz")
    return int(value)


class StreamSession:
    """One accepted WebSocket: its reader, its decoding loop, its limits."""

    def __init__(
        self,
        websocket: WebSocket,
        service: Service,
        rate: int | None,
        fields: dict[str, str],
        client: str = "?",
    ) -> None:
        self.ws = websocket
        self.client = client  # the address, for --max_streams_per_client
        self.service = service
        self.rate = rate
        self.fields = fields  # decoding options from the URL, then from the first message
        self.buffer = bytearray()
        self.arrived = asyncio.Event()  # audio (or the end) is waiting for the decoder
        self.room = asyncio.Event()  # the buffer has room for more
        self.room.set()
        self.ended = ""  # why reading stopped: eof, closed, idle, total, too_long, shutdown, protocol
        self.message = ""  # the error message sent before the last final
        self.ready = asyncio.Event()  # the sample rate is known, or the stream has ended
        self.reader: asyncio.Task[None] | None = None
        self.deadline = 0.0
        self.change: DecodeOptions | None = None  # new options for the next utterance (hot words)
        self.changes = 0  # hot-word messages taken
        self.received = 0  # bytes of audio received

    def stop(self, why: str, message: str = "") -> None:
        """End the stream: no more reading; what was received is decoded and its last final sent."""
        if not self.ended:
            self.ended, self.message = why, message
        self.arrived.set()
        self.ready.set()
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()

    async def run(self) -> None:
        await self.ws.accept()
        self.deadline = asyncio.get_running_loop().time() + self.service.config.total_timeout
        self.reader = asyncio.create_task(self._read())
        try:
            await self.ready.wait()
            if self.ended and self.ended not in ("eof", "shutdown"):
                await self._close(None)
                return
            utterances = await self._utterances()
            if utterances is None:
                await self._close(None)
                return
            await self._decode(utterances)
            del utterances  # its beam search's hypotheses: freed, then handed back to the system
            with contextlib.suppress(RuntimeError):  # the pool is already shut down
                await asyncio.get_running_loop().run_in_executor(self.service.streams, release_memory)
        finally:
            self.reader.cancel()

    async def _utterances(self) -> Utterances | None:
        """The stream's decoding state, with the model configured for its options (on a worker thread:
        configuring may build a decoder)."""
        try:
            options = decode_options(self.fields, self.service.config)
            pool = self.service.streams
            model = await asyncio.get_running_loop().run_in_executor(pool, self.service.model_for, options)
        except ServiceError as error:  # an option the service cannot honour: one line
            self.ended, self.message = "options", error.message
            return None
        rate = self.rate or self.service.model.sample_rate
        return Utterances(model, rate, self.service.endpointing, options.candidates)

    async def _receive(self) -> Message | None:
        """The next message, or None after stopping for silence or the total time."""
        loop = asyncio.get_running_loop()
        left = self.deadline - loop.time()
        idle = self.service.config.idle_timeout
        try:
            message = await asyncio.wait_for(self.ws.receive(), max(0.0, min(idle, left)))
        except asyncio.TimeoutError:
            if left > idle:
                self.stop("idle", f"nothing received for {idle:g} s (--idle_timeout): closing")
            else:
                self.stop(
                    "total", f"open longer than {self.service.config.total_timeout:g} s (--total_timeout)"
                )
            return None
        if message["type"] == "websocket.disconnect":
            self.stop("closed")
            return None
        return message

    async def _first_message(self) -> None:
        """The sample rate (and decoding fields) from the first message; binary audio first means the
        model's own rate."""
        message = await self._receive()
        if message is None:
            return
        if message.get("bytes") is not None:
            self.rate = self.service.model.sample_rate
            self._keep(message["bytes"])
            return
        try:
            body = json.loads(message.get("text") or "")
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            if body.get("eof"):
                self.rate = self.service.model.sample_rate
                self.stop("eof")
                return
            config = body.get("config", body)  # Vosk's servers nest it as {"config": {...}}
            if not isinstance(config, dict) or "sample_rate" not in config:
                raise ValueError('expected {"sample_rate": N} first')
            self.rate = _rate(config["sample_rate"])
            self.fields.update({k: str(v) for k, v in config.items() if k != "sample_rate"})
        except ValueError as error:
            self.stop("protocol", f"first message: {error}")

    def _keep(self, data: bytes) -> None:
        self.received += len(data)
        self.buffer += data
        self.arrived.set()
        if len(self.buffer) >= MAX_BUFFERED:
            self.room.clear()

    async def _read(self) -> None:
        """Read messages until the stream ends; whatever goes wrong in reading (a message that breaks the
        JSON parser's recursion, say) ends the stream as a protocol error, never leaves it open."""
        try:
            await self._read_messages()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.stop("protocol", f"unreadable message ({type(error).__name__})")

    async def _read_messages(self) -> None:
        if self.rate is None:
            await self._first_message()
        self.ready.set()
        while not self.ended:
            await self.room.wait()
            message = await self._receive()
            if message is None:
                return
            if message.get("bytes") is not None:
                self._keep(message["bytes"])
                continue
            try:
                body = json.loads(message.get("text") or "")
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("eof"):
                self.stop("eof")
                return
            if isinstance(body, dict) and set(body) == {"hot_words"}:
                self._change_hot_words(body["hot_words"])
                continue
            self.stop("protocol", 'expected binary 16-bit PCM, {"hot_words": "..."} or {"eof": 1}')
            return

    def _change_hot_words(self, value: Any) -> None:
        """``{"hot_words": "phrase:boost,..."}`` mid-stream: checked now, used from the utterance under way
        if nothing has been heard in it yet, else from the next one ("" clears them)."""
        if not isinstance(value, str):
            self.stop("protocol", 'hot_words: expected a string "phrase:boost,phrase:boost"')
            return
        seconds = self.received / 2 / (self.rate or self.service.model.sample_rate)
        self.changes += 1
        if self.changes > CHANGES_AT_ONCE + seconds / SECONDS_PER_CHANGE:
            limit = f"{CHANGES_AT_ONCE} at once, then one per {SECONDS_PER_CHANGE:g} s of audio"
            said = f"hot_words: changed {self.changes} times in {seconds:.1f} s of audio ({limit})"
            self.stop("options", said)
            return
        fields = {**self.fields, "hot_words": value}
        try:
            options = decode_options(fields, self.service.config)
        except ServiceError as error:
            self.stop("options", error.message)
            return
        self.change, self.fields = options, fields

    async def _decode(self, utterances: Utterances) -> None:
        loop = asyncio.get_running_loop()
        limit = self.service.config.max_audio_seconds
        pool = self.service.streams
        try:
            while True:
                await self.arrived.wait()
                self.arrived.clear()
                step = self._step_bytes(utterances)
                chunk, self.buffer = bytes(self.buffer[:step]), self.buffer[step:]
                if self.buffer:
                    self.arrived.set()  # more is waiting: the next step takes it
                if len(self.buffer) < MAX_BUFFERED:
                    self.room.set()
                if self.change is not None:
                    await self._reconfigure(utterances)
                if chunk and self.ended != "closed":
                    batcher = self.service.batcher
                    if batcher is not None:  # with the other streams' steps, in one model call
                        events = await batcher.step(utterances, chunk)
                    else:
                        events = await loop.run_in_executor(pool, utterances.feed, chunk)
                    await self._send(events, utterances.seconds)
                    if utterances.seconds >= limit:
                        self.stop("too_long", f"more than {limit:g} s of audio (--max_audio_seconds)")
                        self.buffer = bytearray()
                if self.ended == "closed" or (self.ended and not self.buffer):
                    break
            if self.ended == "closed":
                return
            await self._reconfigure(utterances)  # a change that came with the end: refused or applied
            if self.service.batcher is not None:  # with the other streams ending now
                finals = await self.service.batcher.finish(utterances)
            else:
                finals = await loop.run_in_executor(pool, utterances.finish)
        except Exception as error:  # a failure in decoding: tell the client, then close
            self.ended, self.message = "failed", f"decoding failed ({type(error).__name__})"
            finals = []
        await self._close(finals if utterances.seconds or self.ended == "eof" else [])

    async def _reconfigure(self, utterances: Utterances) -> None:
        """The stream decodes with the options a message changed (``Utterances.use``)."""
        options, self.change = self.change, None
        if options is None:
            return
        loop = asyncio.get_running_loop()
        try:
            utterances.use(await loop.run_in_executor(self.service.streams, self.service.model_for, options))
        except ServiceError as error:  # refused by the decoder: said even when the audio has ended
            if self.ended != "closed":
                self.ended, self.message = "options", error.message
            self.stop("options")

    def _step_bytes(self, utterances: Utterances) -> int:
        """How much buffered audio one decoding step takes: at most STEP_SECONDS (so a step's time and
        memory are bounded whatever the client sends at once, and a client that leaves is noticed between
        steps), and never past --max_audio_seconds."""
        rate = self.rate or self.service.model.sample_rate
        left = max(0.0, self.service.config.max_audio_seconds - utterances.seconds)
        return 2 * max(1, int(rate * min(STEP_SECONDS, left)))

    async def _send(self, events: list[Event], seconds: float) -> None:
        for event in events:
            if event["type"] == "partial":
                event = {**event, "time": round(seconds, 3)}
            try:  # a client that reads nothing fills the socket: give up on it after --idle_timeout
                send = self.ws.send_text(json.dumps(event, ensure_ascii=False))
                await asyncio.wait_for(send, self.service.config.idle_timeout)
            except Exception:  # the client is gone (or reads nothing): stop quietly
                self.stop("closed")
                self.ended = "closed"
                return

    async def _close(self, finals: list[Event] | None) -> None:
        if self.ended == "closed":
            return
        if self.message:
            await self._send([{"type": "error", "error": self.message}], 0.0)
        await self._send(finals or [], 0.0)
        if self.ended != "closed":
            code = CLOSE_CODES.get(self.ended, 1008)
            with contextlib.suppress(Exception):  # the client may be gone already
                await self.ws.close(code)
