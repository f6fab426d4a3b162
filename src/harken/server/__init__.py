"""``harken serve``: a speech service over one loaded model (HTTP, WebSocket streaming, a browser page).

This module holds the service's options (``ServerConfig``; cli.py makes them flags) and ``serve``, which
runs the service until it is told to stop. The application itself is in app.py, the streams' audio logic
in utterances.py, the page in static/. Starlette and uvicorn are imported only when a service starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from harken.config import option, require

if TYPE_CHECKING:
    from harken.inference import Model


@dataclass(frozen=True)
class ServerConfig:
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0 or :: for every interface)")
    port: int = option(8080, "TCP port to listen on")
    api_key: str = option(
        "", "require 'Authorization: Bearer KEY' on every request (default: $HARKEN_API_KEY; none if unset)"
    )
    workers: int = option(
        0, "requests or stream steps decoded at once, each on its own thread (0: CPU count)"
    )
    threads: int = option(1, "threads one decode uses inside the runtime")
    batch_streams: bool = option(
        True, "run the model for all live streams' new audio in one batched call (off: each stream alone)"
    )
    batch_wait_ms: float = option(
        2.0, "longest a stream's step waits for others to join its batch, in milliseconds (0-100)"
    )
    max_batch: int = option(64, "most streams one batched model call takes")
    max_queued: int = option(16, "HTTP requests that may wait for a free worker; more are answered 503")
    max_streams: int = option(16, "WebSocket streams open at once; more are refused with 503")
    max_upload_mb: float = option(100.0, "largest upload in MB (10^6 bytes); larger ones are answered 413")
    max_audio_seconds: float = option(
        3600.0, "longest audio a request may hold, in seconds; longer is answered 413"
    )
    idle_timeout: float = option(
        30.0, "seconds a stream or an upload may send nothing before the server closes it"
    )
    total_timeout: float = option(3600.0, "seconds a stream or an upload may last in all")
    endpoint_ms: int = option(600, "milliseconds of non-speech that end an utterance in a stream")
    endpoint_aggressiveness: int = option(
        2, "how readily the streams' voice-activity detector hears non-speech: 0-3; -1: never (30 s pieces)"
    )
    vad_aggressiveness: int = option(
        3, "the same for splitting uploads longer than 30 s, as harken transcribe does; -1: no splitting"
    )
    shutdown_timeout: float = option(
        30.0, "seconds a shutdown (Ctrl-C, SIGTERM) waits for the requests and streams in flight"
    )
    max_beam_width: int = option(
        1024, "largest beam_width a request may ask for (memory and time grow with it); more is answered 400"
    )
    max_candidates: int = option(
        10, "largest candidate_transcripts a request may ask for; more is answered 400"
    )
    max_hot_words: int = option(
        100, "most hot words a request may give (each at most 64 characters, boost within ±100)"
    )
    max_requests_per_client: int = option(
        0,
        "HTTP requests one client address may hold at once, uploading, waiting or decoding (0: half of "
        "--workers + --max_queued); more are answered 429. Behind a reverse proxy every client is the "
        "proxy: raise it",
    )
    max_streams_per_client: int = option(
        0, "WebSocket streams one client address may hold open (0: half of --max_streams); more get 429"
    )
    header_timeout: float = option(
        10.0, "seconds a connection may take to send a request's headers before it is closed (408)"
    )
    max_connections: int = option(
        512,
        "connections open at once; when full, the longest-waiting connection that has sent no request is "
        "closed to make room, and when none is idle a new one is answered 503",
    )
    max_connections_per_client: int = option(
        64, "the same, for the connections of one client address (429 when all of its are busy)"
    )
    allowed_origins: str = option(
        "",
        "web pages of other sites that may use the service from a browser, comma-separated origins "
        "(https://app.example.org) or * for any (default: only the service's own page)",
    )

    def __post_init__(self) -> None:
        require(0 <= self.port <= 65535, "port", self.port, "0-65535")
        for name in ("max_upload_mb", "max_audio_seconds", "idle_timeout", "total_timeout", "header_timeout"):
            require(0 < getattr(self, name) < math.inf, name, getattr(self, name), "positive and finite")
        for name in ("workers", "max_queued", "shutdown_timeout", "max_hot_words", "max_requests_per_client",
                     "max_streams_per_client"):  # fmt: skip
            require(0 <= getattr(self, name) < math.inf, name, getattr(self, name), "0 or more")
        for name in ("threads", "max_streams", "max_beam_width", "max_candidates", "max_connections",
                     "max_connections_per_client"):  # fmt: skip
            require(getattr(self, name) >= 1, name, getattr(self, name), "1 or more")
        require(self.endpoint_ms >= 30, "endpoint_ms", self.endpoint_ms, "30 or more")
        require(0 <= self.batch_wait_ms <= 100, "batch_wait_ms", self.batch_wait_ms, "0 to 100")
        require(1 <= self.max_batch <= 1024, "max_batch", self.max_batch, "1 to 1024")
        require(self.threads <= 256, "threads", self.threads, "1 to 256")
        require(self.workers <= 1024, "workers", self.workers, "0 (one per CPU) to 1024")
        for name in ("vad_aggressiveness", "endpoint_aggressiveness"):
            require(-1 <= getattr(self, name) <= 3, name, getattr(self, name), "-1 to 3")

    def resolved(self) -> ServerConfig:
        """With the defaults that depend on the machine filled in: the worker count from the CPU count.
        (``harken serve`` takes the API key from $HARKEN_API_KEY when --api_key is not given.)"""
        return replace(self, workers=self.workers or os.cpu_count() or 1)

    def per_client(self) -> tuple[int, int]:
        """(requests, streams) one client address may hold at once (``resolved`` first for the workers)."""
        requests = self.max_requests_per_client or max(1, (self.workers + self.max_queued) // 2)
        return requests, self.max_streams_per_client or max(1, self.max_streams // 2)


def serve(model: Model, config: ServerConfig, model_name: str) -> None:
    """Serve ``model`` until SIGINT or SIGTERM; then finish the streams and requests in flight and return."""
    from harken.server.app import run

    run(model, config.resolved(), model_name)


__all__ = ["ServerConfig", "serve"]
