"""The speech service: HTTP transcription (harken's request shape and OpenAI's), WebSocket streaming and
the browser page, over one loaded ``Model``, on Starlette and uvicorn.

    POST /v1/transcribe                audio as the body or a multipart upload -> JSON, txt, srt, vtt, tsv
    POST /v1/audio/transcriptions      OpenAI's request shape (multipart ``file`` + ``response_format``)
    WS   /v1/stream                    16-bit PCM in, partial and final results out
    GET  /healthz, /v1/models, /       health, what is loaded, the page (static/)

Decoding runs on worker threads, never on the event loop: files on one pool, stream steps on another, so
a long file never holds up live streams. Every limit answers at once (413, 503, a close code) instead of
queueing without bound. Uploads are streamed to a private temporary folder under a name the server makes
up, counted as they come, and refused as soon as they pass the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import struct
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive
from starlette.websockets import WebSocket

from harken import audio, transcribe
from harken.inference import Model
from harken.server import ServerConfig
from harken.server.connections import protocol_class
from harken.server.security import ApiKey, OriginCheck, Redact
from harken.server.service import (
    DECODE_FIELDS,
    DecodeOptions,
    Service,
    ServiceError,
    decode_options,
    error_response,
    model_info,
    release_memory,
    service_of,
)
from harken.server.streaming import RATES, StreamSession, stream_options

STATIC = Path(__file__).parent / "static"
MAX_CHANNELS = 32  # channels an upload may have (they are mixed down, each read in full)
MAX_MESSAGE = 4 * 1024 * 1024  # largest WebSocket message, bytes (2 minutes of 16 kHz audio)
TEXT_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
}


# ---- uploads ---------------------------------------------------------------------------------------


def _limited(receive: Receive, config: ServerConfig) -> Receive:
    """``receive`` that answers 413 once the body passes --max_upload_mb and 408 when the client sends
    nothing for --idle_timeout seconds (or takes more than --total_timeout in all)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.total_timeout
    limit = int(config.max_upload_mb * 1e6)
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        left = deadline - loop.time()
        try:
            message = await asyncio.wait_for(receive(), max(0.0, min(config.idle_timeout, left)))
        except asyncio.TimeoutError:
            why = f"nothing for {config.idle_timeout:g} s" if left > config.idle_timeout else "too slowly"
            raise ServiceError(408, f"the upload came {why}") from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ServiceError(413, f"upload larger than {config.max_upload_mb:g} MB (--max_upload_mb)")
        return message

    return wrapped


async def save_upload(
    request: Request, service: Service, form_only: bool = False
) -> tuple[Path, dict[str, str]]:
    """The request's audio (the body, or the file of a multipart form) in a new file of the service's
    folder, and the form's other fields. Nothing from the request names the file."""
    config = service.config
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > config.max_upload_mb * 1e6:
        raise ServiceError(413, f"upload larger than {config.max_upload_mb:g} MB (--max_upload_mb)")
    limited = Request(request.scope, _limited(request.receive, config))
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
    if form_only and not multipart:
        raise ServiceError(400, "expected a multipart/form-data upload with the audio in the field 'file'")
    handle = tempfile.NamedTemporaryFile(dir=service.uploads, prefix="upload-", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    fields: dict[str, str] = {}
    try:
        with handle:
            if multipart:
                fields = await _save_form(limited, handle)
            else:
                async for chunk in limited.stream():
                    handle.write(chunk)
    except ClientDisconnect:
        path.unlink(missing_ok=True)
        raise ServiceError(400, "the client went away during the upload") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if path.stat().st_size == 0:
        path.unlink()
        raise ServiceError(400, "no audio: the request holds an empty body or file")
    return path, fields


async def _save_form(request: Request, handle: Any) -> dict[str, str]:
    try:
        form = await request.form(max_files=1, max_fields=32, max_part_size=64 * 1024)
    except HTTPException as error:
        raise ServiceError(400, f"bad multipart form: {error.detail}") from None
    try:
        uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not uploads:
            raise ServiceError(400, "the form holds no file (send the audio in the field 'file')")
        source = uploads[0].file
        source.seek(0)
        await asyncio.to_thread(shutil.copyfileobj, source, handle)
        return {key: value for key, value in form.multi_items() if isinstance(value, str)}
    finally:
        await form.close()


def plain_path(message: str, path: Path) -> str:
    """A message with the upload's file name (the server's business) replaced by 'the upload'."""
    return message.replace(str(path), "the upload")


def _decode_file(
    service: Service, path: Path, options: DecodeOptions, stop: Callable[[], bool]
) -> transcribe.Transcript:
    """Runs on a worker thread: what ``harken transcribe`` gives for the file (the same function)."""
    config = service.config

    try:
        info = audio.info(path)
    except audio.AudioError as error:
        raise ServiceError(400, plain_path(str(error), path)) from None
    except (ValueError, OverflowError, struct.error) as error:  # a header no reader expected
        raise ServiceError(400, f"the upload's header cannot be read ({type(error).__name__})") from None
    if not RATES[0] <= info.sample_rate <= RATES[-1] or not 1 <= info.channels <= MAX_CHANNELS:
        # resampling cost grows with the rate, and decoding with the channels: refused like a stream's
        raise ServiceError(
            400, f"{info.sample_rate} Hz, {info.channels} channels: expected 4000-192000 Hz and "
            f"1-{MAX_CHANNELS} channels",
        )  # fmt: skip
    if info.duration > config.max_audio_seconds:
        limit = f"longer than {config.max_audio_seconds:g} s (--max_audio_seconds)"
        raise ServiceError(413, f"{info.duration:.0f} s of audio: {limit}")
    model = service.model_for(options)
    more = {"num_results": options.candidates} if options.candidates > 1 else {}
    try:
        (result,) = transcribe.transcribe_files(model, [path], config.vad_aggressiveness, stop=stop, **more)
    finally:
        release_memory()
    if result.error:
        raise ServiceError(400, plain_path(result.error, path))
    return result


async def transcribe_upload(
    request: Request, query_fields: tuple[str, ...], form_only: bool
) -> tuple[transcribe.Transcript, dict[str, str]]:
    """Take a place, save the upload, decode it on the file pool: the transcript and the request's fields
    (form fields, overridden by the query's). harken's endpoint (``query_fields`` given) refuses fields
    it does not know; OpenAI's takes the decoding fields it finds and ignores the rest, as OpenAI does."""
    service = service_of(request)
    strict = bool(query_fields)
    query = dict(request.query_params.items()) if strict else {}
    _options(query, service, strict)  # a bad option is refused before the upload is read
    with service.place(client_of(request)):
        path, fields = await save_upload(request, service, form_only)
        try:
            fields.update(query)
            options = _options(fields, service, strict)
            result = await _decode_watched(request, service, path, options)
        finally:
            path.unlink(missing_ok=True)
    return result, fields


def _options(fields: dict[str, str], service: Service, strict: bool) -> DecodeOptions:
    if strict:
        chosen = {key: value for key, value in fields.items() if key != "output_format"}
    else:
        chosen = {key: value for key, value in fields.items() if key in DECODE_FIELDS}
    return decode_options(chosen, service.config)


async def _decode_watched(
    request: Request, service: Service, path: Path, options: DecodeOptions
) -> transcribe.Transcript:
    """Decode on the file pool while watching the connection: when the client goes away (or the service
    shuts down) the decode stops before its next stretch of speech instead of running on for no one."""
    gone = threading.Event()

    def stop() -> bool:
        return gone.is_set() or service.stopping.is_set()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    loop = asyncio.get_running_loop()
    decode = loop.run_in_executor(service.files, _decode_file, service, path, options, stop)
    watcher = asyncio.ensure_future(watch())
    try:
        return await decode
    except transcribe.Cancelled:
        service.cancelled += 1
        raise ServiceError(499 if gone.is_set() else 503, "the decode was cancelled") from None
    finally:
        watcher.cancel()
        gone.set()  # a decode still queued when this request ends (cancelled) never starts


# ---- responses -------------------------------------------------------------------------------------


def _segments(result: transcribe.Transcript) -> list[dict[str, Any]]:
    return [asdict(segment) for segment in result.segments]


def _candidates(result: transcribe.Transcript) -> list[dict[str, Any]]:
    """The transcript and its confidence; for a file decoded in one piece, then the next-best ones
    (candidate_transcripts)."""
    best = {"text": result.text, "confidence": sum(s.confidence for s in result.segments)}
    if len(result.segments) != 1:
        return [best]
    others = getattr(result.segments[0], "alternatives", ())
    return [best, *({"text": a.text, "confidence": a.confidence} for a in others)]


def harken_json(result: transcribe.Transcript, model_name: str) -> dict[str, Any]:
    segments = _segments(result)
    warning = {"warning": plain_path(result.warning, result.path)} if result.warning else {}
    return {
        **warning,  # only part of the upload could be read (truncated, damaged)
        "text": result.text,
        "duration": result.duration,
        "model": model_name,
        "candidates": _candidates(result),
        "segments": segments,
        "words": [word for segment in segments for word in segment["words"]],
    }


def openai_verbose_json(result: transcribe.Transcript, language: str, step: float) -> dict[str, Any]:
    segments = [
        {"id": index, "seek": 0, "start": s.start, "end": s.end, "text": s.text, "tokens": [],
         "temperature": 0.0, "avg_logprob": s.confidence / max(1.0, (s.end - s.start) / step),
         "compression_ratio": 1.0, "no_speech_prob": 0.0}
        for index, s in enumerate(result.segments)
    ]  # fmt: skip
    words = [asdict(word) for segment in result.segments for word in segment.words]
    return {"task": "transcribe", "language": language, "duration": result.duration,
            "text": result.text, "segments": segments, "words": words}  # fmt: skip


def text_response(result: transcribe.Transcript, output_format: str) -> Response:
    body = transcribe.render(result, "txt" if output_format == "text" else output_format)
    return Response(body, media_type=TEXT_TYPES[output_format])


# ---- endpoints -------------------------------------------------------------------------------------

HARKEN_FIELDS = ("output_format", "beam_width", "hot_words", "scorer", "candidate_transcripts")
OPENAI_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


async def transcribe_endpoint(request: Request) -> Response:
    output_format = request.query_params.get("output_format", "json")
    if output_format not in (*transcribe.OUTPUT_FORMATS, "text"):
        raise ServiceError(400, f"output_format {output_format!r}: expected json, txt, srt, vtt or tsv")
    result, fields = await transcribe_upload(request, HARKEN_FIELDS, form_only=False)
    output_format = fields.get("output_format", output_format)
    if output_format == "json":
        return JSONResponse(harken_json(result, service_of(request).model_name))
    if output_format not in TEXT_TYPES:
        raise ServiceError(400, f"output_format {output_format!r}: expected json, txt, srt, vtt or tsv")
    return text_response(result, output_format)


async def openai_endpoint(request: Request) -> Response:
    """OpenAI's POST /v1/audio/transcriptions: ``model``, ``language``, ``prompt`` and ``temperature`` are
    accepted and ignored (one model is loaded; decoding is deterministic)."""
    result, fields = await transcribe_upload(request, (), form_only=True)
    response_format = fields.get("response_format", "json")
    if response_format not in OPENAI_FORMATS:
        raise ServiceError(
            400, f"response_format {response_format!r}: expected one of {', '.join(OPENAI_FORMATS)}"
        )
    if response_format == "json":
        return JSONResponse({"text": result.text})
    if response_format == "verbose_json":
        service = service_of(request)
        step = service.model.config.features.feature_win_step / 1000.0
        return JSONResponse(openai_verbose_json(result, model_info(service)["language"], step))
    return text_response(result, response_format)


async def health_endpoint(request: Request) -> Response:
    service = service_of(request)
    body = {"status": "draining" if service.draining else "ok", "requests": service.requests,
            "streams": len(service.sessions), "cancelled": service.cancelled}  # fmt: skip
    return JSONResponse(body, 503 if service.draining else 200)


async def models_endpoint(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [model_info(service_of(request))]})


async def page_endpoint(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def stream_endpoint(websocket: WebSocket) -> None:
    service = service_of(websocket)
    if service.draining or len(service.sessions) >= service.config.max_streams:
        why = "shutting down" if service.draining else f"{len(service.sessions)} streams open (--max_streams)"
        await deny(websocket, 503, f"busy: {why}; retry later")
        return
    client = client_of(websocket)
    if service.streams_of(client) >= service.config.per_client()[1]:
        why = f"{service.streams_of(client)} streams of this address open (--max_streams_per_client)"
        await deny(websocket, 429, f"busy: {why}; retry later")
        return
    try:
        fields, rate = stream_options(websocket.query_params)
        decode_options(fields, service.config)
    except ServiceError as error:
        await deny(websocket, error.status, error.message)
        return
    except ValueError as error:
        await deny(websocket, 400, str(error))
        return
    session = StreamSession(websocket, service, rate, fields, client)
    service.sessions.add(session)
    try:
        await session.run()
    finally:
        service.sessions.discard(session)


def client_of(connection: HTTPConnection) -> str:
    """The client's address (as the connection shows it: behind a proxy, the proxy's)."""
    return connection.client.host if connection.client else "?"


async def deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse a WebSocket before accepting it: an HTTP answer where the server can send one, else a close."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(status, message))
    else:
        await websocket.close(1013 if status == 503 else 1008, message[:120])


async def error_handler(request: Request, exc: Exception) -> Response:
    """Errors as JSON. A refused upload also closes the connection: the client stops sending at once
    (uvicorn would otherwise read the rest of the body to keep the connection) and sees the answer."""
    headers = {"Connection": "close"} if request.method == "POST" else {}
    if isinstance(exc, ServiceError):
        return error_response(exc.status, exc.message, {**exc.headers, **headers})
    if isinstance(exc, HTTPException):
        return error_response(exc.status_code, str(exc.detail), {**(exc.headers or {}), **headers})
    return error_response(500, f"internal error ({type(exc).__name__})", headers)  # uvicorn logs the trace


# ---- the application and the server ---------------------------------------------------------------


def create_app(model: Model, config: ServerConfig, model_name: str) -> Starlette:
    """The ASGI application (``config`` as ``ServerConfig.resolved`` gives it)."""
    uploads = Path(tempfile.mkdtemp(prefix="harken-uploads-"))
    service = Service(model, config, model_name, uploads)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    routes = [
        Route("/", page_endpoint, methods=["GET"]),
        Route("/healthz", health_endpoint, methods=["GET"]),
        Route("/v1/models", models_endpoint, methods=["GET"]),
        Route("/v1/transcribe", transcribe_endpoint, methods=["POST"]),
        Route("/v1/audio/transcriptions", openai_endpoint, methods=["POST"]),
        WebSocketRoute("/v1/stream", stream_endpoint),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {ServiceError: error_handler, HTTPException: error_handler, Exception: error_handler}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.service = service
    app.add_middleware(ApiKey, key=config.api_key)
    allowed = tuple(o.strip().rstrip("/") for o in config.allowed_origins.split(",") if o.strip())
    app.add_middleware(OriginCheck, allowed=allowed)
    if allowed:  # outermost: answers the browsers' preflight requests before the key is asked for
        app.add_middleware(
            CORSMiddleware, allow_origins=list(allowed), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )  # fmt: skip
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, whose first SIGINT/SIGTERM first lets the streams finish their utterance (a last
    final, then close 1001) and refuses new work, then shuts down as uvicorn does: requests in flight
    finish (up to --shutdown_timeout). A second signal skips the wait, a third quits at once."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self.loop: asyncio.AbstractEventLoop | None = None
        self._drains: set[asyncio.Task[None]] = set()  # keeps the drain task referenced while it runs

    async def serve(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.service.draining or self.loop is None or self.should_exit:
            self.service.stopping.set()  # a second signal: decodes in flight stop at their next stretch
            super().handle_exit(sig, frame)
            return
        self.service.draining = True  # a signal handler: start the drain on the loop, between its callbacks
        loop = self.loop
        loop.call_soon_threadsafe(lambda: self._drains.add(loop.create_task(self._drain(sig))))

    async def _drain(self, sig: int) -> None:
        for session in list(self.service.sessions):
            session.stop("shutdown")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.service.config.shutdown_timeout
        while self.service.sessions and loop.time() < deadline and not self.should_exit:
            await asyncio.sleep(0.05)
        super().handle_exit(sig, None)


def run(model: Model, config: ServerConfig, model_name: str) -> None:
    app = create_app(model, config, model_name)
    service: Service = app.state.service
    protocol = protocol_class(
        config.max_connections, config.max_connections_per_client, config.header_timeout, config.idle_timeout
    )
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http=protocol,  # connections bounded and reaped there; requests and streams by the service
        ws_max_size=MAX_MESSAGE,
        timeout_graceful_shutdown=math.ceil(config.shutdown_timeout),
        log_level="info",
        server_header=False,
    )
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(Redact(config.api_key))
    auth = "API key required" if config.api_key else "no API key"
    print(
        f"harken serve: {model_name} ({model.sample_rate} Hz) on http://{_host(config.host)}:{config.port}/ "
        f"({auth}; {config.workers} workers)",
        flush=True,
    )
    _Server(uv_config, service).run()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["create_app", "run"]
