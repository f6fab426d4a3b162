"""The service's connections, before any request: how many, from whom, and how long a request's head may
take. uvicorn's own guard (``limit_concurrency``) counts every open socket, so 200 sockets that send half
a request head and wait lock every client out, /healthz included, with a plain-text 503. Here:

- a connection must send a complete request head within ``--header_timeout`` seconds of its first byte
  (or of opening): else it gets a JSON 408 and is closed. Bytes that trickle in do not restart the clock;
- connections that wait for a request (never sent one, or idle between keep-alive requests) are the ones
  given up when room is needed: a new connection beyond ``--max_connections_per_client`` from its address,
  or ``--max_connections`` in all, closes the longest-waiting idle connection (of that address, or of
  anyone's) instead of being refused. Only when every connection is busy with a request is the new one
  answered 429 (its address is full) or 503 (the service is full), as JSON;
- a client that takes nothing of what is sent to it (pipelined requests whose answers it never reads)
  is dropped after ``--idle_timeout``;
- requests and streams are then admitted by the service's own counters (workers + --max_queued requests,
  --max_streams streams), which count only what was admitted.

The protocol is uvicorn's h11 one with these additions; its 400 for a malformed request is JSON too.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from harken.server.service import error_body

REASONS = {400: "Bad Request", 408: "Request Timeout", 429: "Too Many Requests", 503: "Service Unavailable"}


@dataclass
class Registry:
    """Every open HTTP connection (before any WebSocket upgrade), oldest first, and per client address."""

    total: int
    per_client: int
    header_timeout: float
    write_timeout: float  # a client that takes nothing of a response for this long is dropped
    open: OrderedDict[Any, str] = field(default_factory=OrderedDict)  # connection -> client address
    by_client: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, connection: Any, client: str) -> None:
        self.open[connection] = client
        self.by_client[client] += 1

    def discard(self, connection: Any) -> None:
        client = self.open.pop(connection, None)
        if client is not None:
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]

    def idle(self, client: str | None = None) -> Any:
        """The longest-open connection waiting for a request (of ``client``, or anyone's), or None."""
        for connection, address in self.open.items():
            if (client is None or address == client) and connection.waiting():
                return connection
        return None

    def make_room(self, client: str) -> int:
        """Close idle connections until a new one from ``client`` fits: 0 when it does, else the status
        to answer it with (429: all of its address's connections are busy; 503: all connections are)."""
        while self.by_client.get(client, 0) >= self.per_client:
            oldest = self.idle(client)
            if oldest is None:
                return 429
            oldest.refuse(408, "closed to make room: no request received on this connection")
        while len(self.open) >= self.total:
            oldest = self.idle()
            if oldest is None:
                return 503
            oldest.refuse(408, "closed to make room: no request received on this connection")
        return 0


def raw_response(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 response with the service's JSON error body, closing the connection."""
    body = json.dumps(error_body(status, message)).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    )
    if status in (429, 503):
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on request heads and room made by closing idle
    connections (``registry`` is set on the class that ``protocol_class`` makes)."""

    registry: Registry

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.head_of: object = None  # the request cycle the timer waits to be replaced
        self.refused = False
        client = self.client[0] if self.client else "?"
        status = self.registry.make_room(client)
        if status:
            why = "this address has" if status == 429 else "the service has"
            self.refuse(status, f"busy: {why} too many connections open; retry later", register=False)
            return
        self.registry.add(self, client)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        timer = getattr(self, "write_timer", None)
        if timer is not None:
            timer.cancel()
            self.write_timer = None
        self.registry.discard(self)
        super().connection_lost(exc)

    def waiting(self) -> bool:
        """Whether this connection holds no request: none sent yet, or idle after a response."""
        return not self.refused and (self.cycle is None or self.cycle.response_complete)

    def refuse(self, status: int, message: str, register: bool = True) -> None:
        """Answer ``status`` with a JSON error and close (no request of this connection is running)."""
        self.refused = True
        self._stop_head_timer()
        if register:
            self.registry.discard(self)
        if not self.transport.is_closing():
            self.transport.write(raw_response(status, message))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.head_timer is None and self.waiting():
            self._start_head_timer()  # the first bytes of a keep-alive connection's next request
        super().data_received(data)
        if self.head_timer is not None and self.cycle is not self.head_of:
            self._stop_head_timer()  # a whole request head arrived

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._stop_head_timer()
        version = dict(self.headers).get(b"sec-websocket-version", b"")
        if version != b"13":  # the WebSocket library would answer this in plain text
            self.refuse(400, f"unsupported WebSocket version {version[:8].decode('latin-1')!r}: expected 13")
            return
        self.registry.discard(self)  # a stream from here on: --max_streams and its own timeouts bound it
        super().handle_websocket_upgrade(event)

    def pause_writing(self) -> None:
        """The client has stopped taking what the service sends (its buffers are full): give it
        ``write_timeout`` seconds to take some, else drop the connection (pipelined requests whose answers
        are never read would hold it, and their place, for ever)."""
        super().pause_writing()
        if getattr(self, "write_timer", None) is None:
            self.write_timer = self.loop.call_later(self.registry.write_timeout, self._write_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        timer = getattr(self, "write_timer", None)
        if timer is not None:
            timer.cancel()
        self.write_timer = None

    def _write_timeout(self) -> None:
        self.write_timer = None
        self.transport.abort()  # nothing more can be said to a client that reads nothing

    def send_400_response(self, msg: str) -> None:
        self.refuse(400, f"malformed HTTP request: {msg}")

    def _start_head_timer(self) -> None:
        self.head_of = self.cycle
        self.head_timer = self.loop.call_later(self.registry.header_timeout, self._head_timeout)

    def _stop_head_timer(self) -> None:
        if getattr(self, "head_timer", None) is not None:
            self.head_timer.cancel()  # type: ignore[union-attr]
        self.head_timer = None

    def _head_timeout(self) -> None:
        self.head_timer = None
        if self.waiting():
            seconds = f"{self.registry.header_timeout:g}"
            self.refuse(408, f"no complete request within {seconds} s (--header_timeout); closing")


def protocol_class(
    total: int, per_client: int, header_timeout: float, write_timeout: float
) -> type[GuardedProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with its own registry."""
    registry = Registry(total, per_client, header_timeout, write_timeout)
    return type("HarkenProtocol", (GuardedProtocol,), {"registry": registry})
