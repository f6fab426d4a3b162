"""The speech service's process: uvicorn serving the application of ``routes.create_app`` (``run``),
with the connection guards of ``connections`` and a shutdown that lets streams finish first.

Decoding runs on worker threads, never on the event loop: files on one pool, stream steps on another, so
a long file never holds up live streams. Every limit answers at once (413, 503, a close code) instead of
queueing without bound. Uploads are streamed to a private temporary folder under a name the server makes
up, counted as they come, and refused as soon as they pass the limit (``upload``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from types import FrameType
from typing import Any

import uvicorn

from harken.inference import Model
from harken.server import ServerConfig
from harken.server.connections import protocol_class
from harken.server.routes import create_app
from harken.server.security import Redact
from harken.server.service import Service

MAX_MESSAGE = 4 * 1024 * 1024  # largest WebSocket message, bytes (2 minutes of 16 kHz audio)


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
