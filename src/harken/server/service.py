"""What the service's endpoints share: the model (and its per-request configurations), the options, the
worker pools and the counters that bound the work in flight; decoding options; errors as JSON."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import functools
import math
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from harken import __version__
from harken.inference import Model
from harken.scorer import ScorerError, parse_hot_words
from harken.server import ServerConfig
from harken.server.batcher import Batcher
from harken.server.utterances import Endpointing

if TYPE_CHECKING:
    from harken.server.streaming import StreamSession

ERROR_TYPES = {401: "authentication_error", 404: "not_found", 408: "timeout", 413: "request_too_large",
               429: "rate_limit", 503: "server_busy", 500: "server_error"}  # fmt: skip


class ServiceError(Exception):
    """A request the service refuses: an HTTP status and one line that says why."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


def error_body(status: int, message: str) -> dict[str, Any]:
    """The JSON of every error (OpenAI's shape, so its clients show the message)."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "code": status}}  # fmt: skip


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status, dict(headers or {}))


@dataclass(frozen=True)
class DecodeOptions:
    """Per-request decoding options (query or form fields; a stream's URL or first message). None and
    empty mean the service's own settings (its command line)."""

    beam_width: int | None = None
    hot_words: tuple[tuple[str, float], ...] = ()
    scorer: bool | None = None  # False: decode without the service's scorer
    candidates: int = 1

    @property
    def decoding(self) -> tuple[Any, ...]:
        """What changes the decoder (the key of a configured model)."""
        return (self.beam_width, self.hot_words, self.scorer)


DECODE_FIELDS = ("beam_width", "hot_words", "scorer", "candidate_transcripts")
MAX_HOT_WORD = 64  # characters in one hot word
MAX_BOOST = 100.0  # |boost| of a hot word: ln-probability units, so 100 already overrides any acoustics


def _integer(fields: Mapping[str, str], name: str, most: int, flag: str) -> int | None:
    text = fields.get(name, "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text[:12]) < 1:  # "²".isdigit() is true
        raise ServiceError(400, f"{name} {text[:20]!r}: expected a whole number, 1 or more")
    if len(text) > 9 or int(text) > most:
        raise ServiceError(400, f"{name} {text[:20]}: at most {most} (harken serve --{flag})")
    return int(text)


def _hot_words(text: str, config: ServerConfig) -> tuple[tuple[str, float], ...]:
    try:
        hot_words = parse_hot_words(text)
    except ScorerError:
        raise ServiceError(400, f"hot_words {text[:40]!r}: expected word:boost, e.g. 'coffee:2.5'") from None
    if len(hot_words) > config.max_hot_words:
        limit = f"at most {config.max_hot_words} (harken serve --max_hot_words)"
        raise ServiceError(400, f"hot_words: {len(hot_words)} words, {limit}")
    for word, boost in hot_words.items():
        if len(word) > MAX_HOT_WORD:
            raise ServiceError(400, f"hot_words: {word[:20]!r}... is longer than {MAX_HOT_WORD} characters")
        if not math.isfinite(boost) or abs(boost) > MAX_BOOST:
            limit = f"expected -{MAX_BOOST:g} to {MAX_BOOST:g}"
            raise ServiceError(400, f"hot_words: {word[:20]!r} boost {boost:g}: {limit}")
    return tuple(sorted(hot_words.items()))  # in order: the same set is the same configured model


def decode_options(fields: Mapping[str, str], config: ServerConfig) -> DecodeOptions:
    """beam_width, hot_words ("word:boost,word:boost", DeepSpeech's form), scorer (true/false) and
    candidate_transcripts from request fields, each within the service's limits; 400 with one line naming
    the field (and the limit) for a malformed, unknown or too large one."""
    unknown = sorted(set(fields) - set(DECODE_FIELDS))
    if unknown:
        raise ServiceError(400, f"unknown field {unknown[0][:40]!r}: expected {', '.join(DECODE_FIELDS)}")
    scorer = fields.get("scorer", "").strip().lower()
    if scorer not in ("", "true", "false", "1", "0", "on", "off", "yes", "no"):
        raise ServiceError(400, f"scorer {scorer[:20]!r}: expected true or false")
    return DecodeOptions(
        beam_width=_integer(fields, "beam_width", config.max_beam_width, "max_beam_width"),
        hot_words=_hot_words(fields.get("hot_words", ""), config),
        scorer=None if not scorer else scorer in ("true", "1", "on", "yes"),
        candidates=_integer(fields, "candidate_transcripts", config.max_candidates, "max_candidates") or 1,
    )


def configure(model: Model, options: DecodeOptions) -> Model:
    """``model`` decoding as ``options`` ask: a shallow copy (sharing the network and the scorer) whose
    decoder settings are its own, so requests with other settings never change each other's."""
    if not hasattr(model, "set_beam_width"):
        raise ServiceError(400, "this harken decodes greedily: no beam_width, hot_words or scorer options")
    view = copy.copy(model)
    try:
        if options.scorer is False:
            view.disable_scorer()
        elif options.scorer and view.decoder().scorer is None:
            raise ServiceError(400, "scorer=true: no scorer loaded (start harken serve with --scorer)")
        if options.beam_width is not None:
            view.set_beam_width(options.beam_width)
        if options.hot_words:  # the request's add to (or override) the service's own --hot_words
            view.set_hot_words({**view.hot_words, **dict(options.hot_words)})
    except ValueError as error:  # the decoder's own one-line refusals (a word it cannot spell ...)
        raise ServiceError(400, str(error).strip().splitlines()[0]) from None
    return view


@dataclass
class Service:
    """What the endpoints share: the model, the options, the worker pools, the counters."""

    model: Model
    config: ServerConfig
    model_name: str
    uploads: Path  # a private temporary folder; uploads get names the server makes up
    files: ThreadPoolExecutor = field(init=False)
    streams: ThreadPoolExecutor = field(init=False)
    requests: int = 0  # HTTP requests holding a place: uploading, waiting or decoding
    cancelled: int = 0  # decodes stopped because their client went away or the service stopped
    by_client: dict[str, int] = field(default_factory=dict)  # requests holding a place, per address
    sessions: set[StreamSession] = field(default_factory=set)
    draining: bool = False
    stopping: threading.Event = field(default_factory=threading.Event)  # decodes in flight give up
    views: OrderedDict[tuple[Any, ...], Model] = field(default_factory=OrderedDict)
    views_lock: threading.Lock = field(default_factory=threading.Lock)
    batcher: Batcher | None = None  # --batch_streams: the streams' steps, batched

    def __post_init__(self) -> None:
        self.files = ThreadPoolExecutor(self.config.workers, thread_name_prefix="harken-file")
        self.streams = ThreadPoolExecutor(self.config.workers, thread_name_prefix="harken-stream")
        if self.config.batch_streams:
            wait = self.config.batch_wait_ms / 1000
            self.batcher = Batcher(self.streams, wait, self.config.max_batch, self.config.workers)

    def model_for(self, options: DecodeOptions) -> Model:
        """The model configured for ``options`` (the service's own when they change nothing); the last
        few configurations are kept, since building a decoder with a scorer is not free. Call it on a
        worker thread."""
        if options.decoding == DecodeOptions().decoding:
            return self.model
        with self.views_lock:
            if options.decoding in self.views:
                self.views.move_to_end(options.decoding)
                return self.views[options.decoding]
        view = configure(self.model, options)
        with self.views_lock:
            self.views[options.decoding] = view
            while len(self.views) > 8:
                self.views.popitem(last=False)
        return view

    @property
    def endpointing(self) -> Endpointing:
        return Endpointing(self.config.endpoint_ms, self.config.endpoint_aggressiveness)

    @contextlib.contextmanager
    def place(self, client: str) -> Iterator[None]:
        """A place among the requests the service takes at once (workers + max_queued), or 503; and among
        those of one client address (--max_requests_per_client), or 429, so that a few slow clients
        cannot hold every place."""
        if self.draining:
            raise ServiceError(503, "the service is shutting down", {"Retry-After": "5"})
        if self.requests >= self.config.workers + self.config.max_queued:
            raise ServiceError(
                503, f"busy: {self.requests} requests in flight; retry later", {"Retry-After": "1"}
            )
        if self.by_client.get(client, 0) >= self.config.per_client()[0]:
            why = f"{self.by_client[client]} requests of this address in flight (--max_requests_per_client)"
            raise ServiceError(429, f"busy: {why}; retry later", {"Retry-After": "1"})
        self.requests += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        try:
            yield
        finally:
            self.requests -= 1
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]

    def streams_of(self, client: str) -> int:
        return sum(1 for session in self.sessions if session.client == client)

    def close(self) -> None:
        self.stopping.set()
        self.files.shutdown(wait=True, cancel_futures=True)
        self.streams.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.uploads, ignore_errors=True)


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to hand back this way
        return None


def release_memory() -> None:
    """Hand the heap's free pages back to the system (glibc keeps them otherwise). A beam search's
    hypotheses are millions of small allocations: without this, one large decode would leave the
    process at its peak size for good."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def service_of(connection: HTTPConnection) -> Service:
    """The service of a request's or a WebSocket's application."""
    result: Service = connection.app.state.service
    return result


def client_of(connection: HTTPConnection) -> str:
    """The client's address (as the connection shows it: behind a proxy, the proxy's): what the
    per-client limits count by."""
    return connection.client.host if connection.client else "?"


def decoding_info(model: Model) -> dict[str, Any]:
    if not hasattr(model, "decoder"):
        return {"beam_width": 1, "scorer": False, "hot_words": {}}
    decoder = model.decoder()
    settings = decoder.settings
    return {"beam_width": settings.width(decoder.scorer), "scorer": decoder.scorer is not None,
            "hot_words": dict(settings.hot_words)}  # fmt: skip


def model_info(service: Service) -> dict[str, Any]:
    model = service.model
    metadata: dict[str, Any] = getattr(model.backend, "metadata", {})
    return {
        "id": service.model_name,
        "object": "model",
        "created": 0,
        "owned_by": "harken",
        "path": service.model_name,
        "language": metadata.get("language", ""),
        "model_version": metadata.get("model_version", ""),
        "harken_version": __version__,
        "sample_rate": model.sample_rate,
        "alphabet": list(model.alphabet.symbols),
        "decoding": decoding_info(model),
        "streaming": model.backend.directions == 1,
    }
