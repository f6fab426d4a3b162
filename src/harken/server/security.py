"""Who may use the service, and what the log keeps of them: the API key (``ApiKey``), other sites'
browser pages (``OriginCheck``, and CORS for the origins --allowed_origins lists), and keys kept out of
the access log (``Redact``). The checks are ASGI middleware that answer before the application sees the
request, with the service's JSON error; ``protect`` puts them around the application in their order."""

from __future__ import annotations

import hmac
import logging
import re
from urllib.parse import quote, quote_plus, urlsplit

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from harken.server import ServerConfig
from harken.server.service import error_response


async def refuse(
    scope: Scope, receive: Receive, send: Send, status: int, message: str, headers: dict[str, str]
) -> None:
    """Answer an HTTP request or a WebSocket handshake with ``status`` and the JSON error ``message``
    (a WebSocket whose server cannot send an HTTP answer is closed with 1008)."""
    if scope["type"] == "http":
        await error_response(status, message, headers)(scope, receive, send)
    elif "websocket.http.response" in scope.get("extensions", {}):
        response = error_response(status, message)
        await send(
            {"type": "websocket.http.response.start", "status": status, "headers": response.raw_headers}
        )
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})


class ApiKey:
    """ASGI middleware: with a key set, every API request needs ``Authorization: Bearer KEY`` (401
    otherwise); a WebSocket may give it as ``?api_key=`` instead, since browsers cannot set its headers.
    The page (``/`` and ``/static/``) is open: it is the same static files for everyone, holds nothing of
    the service, and asks for the key itself. So is ``/healthz``: load balancers probe without a key, and
    it tells only whether the service is up and how busy it is."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.key or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        message = "missing or wrong API key: send 'Authorization: Bearer KEY'"
        if scope["type"] == "websocket":
            message += " or ?api_key=KEY"
        await refuse(scope, receive, send, 401, message, {"WWW-Authenticate": "Bearer"})

    def _allowed(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path in ("/", "/healthz") or path.startswith("/static/")):
            return True
        headers = dict(scope.get("headers", []))
        given = headers.get(b"authorization", b"").decode("latin-1")
        if given[:7].lower() == "bearer " and hmac.compare_digest(
            given[7:].strip().encode(), self.key.encode()
        ):
            return True
        if scope["type"] == "websocket":
            query = HTTPConnection(scope).query_params.get("api_key", "")
            return hmac.compare_digest(query.encode(), self.key.encode())
        return False


class OriginCheck:
    """ASGI middleware: what a browser sends from another site's page (an ``Origin`` header naming
    another host than the request's) is refused with 403, unless ``--allowed_origins`` lists that origin
    (``*``: any). Without it any web page open in a browser on the machine could use the service (a
    WebSocket is not held to the same-origin rules). Clients that send no Origin (curl, SDKs) pass. A page
    whose own name resolves to the service (DNS rebinding) is same-origin to the browser: the API key,
    not this check, keeps such pages out."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = self._foreign(scope) if scope["type"] in ("http", "websocket") else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        message = f"requests from pages of {origin} are not allowed (harken serve --allowed_origins)"
        await refuse(scope, receive, send, 403, message, {})

    def _foreign(self, scope: Scope) -> str | None:
        """The request's origin when it is another site's and not allowed, else None. The page's own host
        is the request's Host, or what a reverse proxy says it was (X-Forwarded-Host, Forwarded)."""
        headers = dict(scope.get("headers", []))
        if b"origin" not in headers:
            return None
        origin = headers[b"origin"].decode("latin-1").strip().rstrip("/")
        if "*" in self.allowed or origin in self.allowed:
            return None
        parts = urlsplit(origin)
        hosts = [headers.get(b"host", b"").decode("latin-1")]
        hosts += headers.get(b"x-forwarded-host", b"").decode("latin-1").split(",")
        hosts += re.findall(r'host="?([^;,"\s]+)', headers.get(b"forwarded", b"").decode("latin-1"), re.I)
        own = _origin_host(parts.netloc, parts.scheme)
        same = any(_origin_host(host, parts.scheme) == own for host in hosts if host.strip())
        return None if same else origin


def _origin_host(value: str, scheme: str) -> str:
    """host[:port] as browsers write it in an Origin: lower case, without the scheme's default port."""
    value = value.strip().lower()
    default = {"http": ":80", "https": ":443"}.get(scheme.lower(), "")
    return value[: -len(default)] if default and value.endswith(default) else value


def protect(app: Starlette, config: ServerConfig) -> None:
    """Wrap ``app`` in the checks: the API key innermost, then the Origin check, then (with
    --allowed_origins) CORS outermost, so browsers' preflight requests are answered before the key is
    asked for."""
    app.add_middleware(ApiKey, key=config.api_key)
    allowed = tuple(o.strip().rstrip("/") for o in config.allowed_origins.split(",") if o.strip())
    app.add_middleware(OriginCheck, allowed=allowed)
    if allowed:  # outermost: answers the browsers' preflight requests before the key is asked for
        app.add_middleware(
            CORSMiddleware, allow_origins=list(allowed), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )  # fmt: skip


class Redact(logging.Filter):
    """Keeps ``?api_key=...`` out of the access log: any query value after a name that decodes to
    ``api_key``, and the key itself wherever it appears (as it is, or percent-encoded)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.secrets = sorted({key, quote(key, safe=""), quote_plus(key)} - {""}, key=len, reverse=True)

    def _clean(self, text: str) -> str:
        text = re.sub(r"((?:api|%61pi|%41pi)(?:_|%5f)key=)[^&\s\"]*", r"\1***", text, flags=re.I)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


__all__ = ["ApiKey", "OriginCheck", "Redact", "protect", "refuse"]
