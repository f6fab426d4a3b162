"""Uploads read within the service's limits and their options (harken.server.upload); the whole path,
through a running server, is in test_server.py and test_abuse.py."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from harken.server import ServerConfig
from harken.server.service import ServiceError
from harken.server.upload import plain_path, request_options, save_upload


def request_of(chunks: list[bytes], headers: dict[str, str], pause: float = 0.0) -> Request:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(pause)
        return messages.pop(0)

    raw = [(key.lower().encode(), value.encode()) for key, value in headers.items()]
    scope = {"type": "http", "method": "POST", "path": "/v1/transcribe", "headers": raw, "query_string": b""}
    return Request(scope, receive)  # type: ignore[arg-type]


def test_the_body_is_saved_under_a_name_the_server_makes_up(tmp_path: Path) -> None:
    service: Any = SimpleNamespace(config=ServerConfig(), uploads=tmp_path)
    path, fields = asyncio.run(save_upload(request_of([b"RIFF", b"data"], {}), service))
    assert path.parent == tmp_path and path.name.startswith("upload-") and path.read_bytes() == b"RIFFdata"
    assert fields == {}
    assert plain_path(f"{path}: truncated", path) == "the upload: truncated"


def test_uploads_are_refused_at_their_limits(tmp_path: Path) -> None:
    service: Any = SimpleNamespace(config=replace(ServerConfig(), max_upload_mb=1e-5), uploads=tmp_path)
    with pytest.raises(ServiceError, match=r"upload larger than 1e-05 MB \(--max_upload_mb\)") as error:
        asyncio.run(save_upload(request_of([b"x"], {"Content-Length": "11"}), service))
    assert error.value.status == 413
    with pytest.raises(ServiceError, match="upload larger than") as error:
        asyncio.run(save_upload(request_of([b"x" * 6, b"x" * 6], {}), service))  # counted as it comes
    assert error.value.status == 413
    slow: Any = SimpleNamespace(config=replace(ServerConfig(), idle_timeout=0.05), uploads=tmp_path)
    with pytest.raises(ServiceError, match="the upload came nothing for 0.05 s") as error:
        asyncio.run(save_upload(request_of([b"x"], {}, pause=1.0), slow))
    assert error.value.status == 408
    with pytest.raises(ServiceError, match="no audio: the request holds an empty body or file"):
        asyncio.run(save_upload(request_of([b""], {}), service))
    with pytest.raises(ServiceError, match="expected a multipart/form-data upload"):
        asyncio.run(save_upload(request_of([b"x"], {}), service, form_only=True))
    assert list(tmp_path.iterdir()) == []  # nothing refused is kept


def test_harken_refuses_unknown_fields_and_openai_ignores_them() -> None:
    service: Any = SimpleNamespace(config=ServerConfig())
    fields = {"output_format": "srt", "beam_width": "8", "temperature": "0"}
    assert request_options(fields, service, strict=False).beam_width == 8
    with pytest.raises(ServiceError, match="unknown field 'temperature'"):
        request_options(fields, service, strict=True)
    assert request_options({"output_format": "srt"}, service, strict=True).beam_width is None
