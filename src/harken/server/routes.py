"""The service's routes and their endpoints, over one loaded ``Model``, as a Starlette application
(``create_app``):

    POST /v1/transcribe                audio as the body or a multipart upload -> JSON, txt, srt, vtt, tsv
    POST /v1/audio/transcriptions      OpenAI's request shape (multipart ``file`` + ``response_format``)
    WS   /v1/stream                    16-bit PCM in, partial and final results out
    GET  /healthz, /v1/models, /       health, what is loaded, the page (static/)

Uploads are read and decoded by ``upload``, answered in the shapes of ``harken.formats`` (the same text
``harken transcribe`` writes); streams run in ``streaming``; the checks of ``security`` wrap it all.
Every error is answered as JSON (``error_handler``).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from harken import formats, transcribe
from harken.inference import Model
from harken.server import ServerConfig
from harken.server.security import protect
from harken.server.service import (
    Service,
    ServiceError,
    client_of,
    decode_options,
    error_response,
    model_info,
    service_of,
)
from harken.server.streaming import StreamSession, stream_options
from harken.server.upload import plain_path, transcribe_upload

STATIC = Path(__file__).parent / "static"
HARKEN_FIELDS = ("output_format", "beam_width", "hot_words", "scorer", "candidate_transcripts")


def text_response(result: transcribe.Transcript, output_format: str) -> Response:
    """A transcript in one of the formats written as text (``formats.MEDIA_TYPES``)."""
    return Response(formats.render_text(result, output_format), media_type=formats.MEDIA_TYPES[output_format])


async def transcribe_endpoint(request: Request) -> Response:
    output_format = request.query_params.get("output_format", "json")
    if output_format not in (*formats.OUTPUT_FORMATS, "text"):
        raise ServiceError(400, f"output_format {output_format!r}: expected json, txt, srt, vtt or tsv")
    result, fields = await transcribe_upload(request, HARKEN_FIELDS, form_only=False)
    output_format = fields.get("output_format", output_format)
    if output_format == "json":
        warning = plain_path(result.warning, result.path)
        return JSONResponse(formats.harken_json(result, service_of(request).model_name, warning))
    if output_format not in formats.MEDIA_TYPES:
        raise ServiceError(400, f"output_format {output_format!r}: expected json, txt, srt, vtt or tsv")
    return text_response(result, output_format)


async def openai_endpoint(request: Request) -> Response:
    """OpenAI's POST /v1/audio/transcriptions: ``model``, ``language``, ``prompt`` and ``temperature`` are
    accepted and ignored (one model is loaded; decoding is deterministic)."""
    result, fields = await transcribe_upload(request, (), form_only=True)
    response_format = fields.get("response_format", "json")
    if response_format not in formats.OPENAI_FORMATS:
        raise ServiceError(
            400, f"response_format {response_format!r}: expected one of {', '.join(formats.OPENAI_FORMATS)}"
        )
    if response_format == "json":
        return JSONResponse(formats.openai_json(result))
    if response_format == "verbose_json":
        service = service_of(request)
        step = service.model.dims.features.feature_win_step / 1000.0
        return JSONResponse(formats.openai_verbose_json(result, model_info(service)["language"], step))
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
    protect(app, config)
    return app


__all__ = ["create_app", "error_handler", "text_response"]
