"""An uploaded file, from the request to its transcript: the body (or a multipart form's file) streamed
into the service's private folder under a name the server makes up, counted as it comes and refused as
soon as it passes --max_upload_mb or goes quiet (``save_upload``); the request's decoding options
(``request_options``); the decode on the file pool, checked first against the service's limits and
stopped when the client goes away (``transcribe_upload``).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from harken import audio, transcribe
from harken.server import ServerConfig
from harken.server.service import (
    DECODE_FIELDS,
    DecodeOptions,
    Service,
    ServiceError,
    client_of,
    decode_options,
    release_memory,
    service_of,
)
from harken.server.streaming import RATES

MAX_CHANNELS = 32  # channels an upload may have (they are mixed down, each read in full)


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


def request_options(fields: dict[str, str], service: Service, strict: bool) -> DecodeOptions:
    """The decoding options of a request's fields: ``strict`` (harken's endpoint) refuses any field but
    output_format and the decoding ones; otherwise (OpenAI's) the fields that are not decoding options
    are ignored."""
    if strict:
        chosen = {key: value for key, value in fields.items() if key != "output_format"}
    else:
        chosen = {key: value for key, value in fields.items() if key in DECODE_FIELDS}
    return decode_options(chosen, service.config)


async def transcribe_upload(
    request: Request, query_fields: tuple[str, ...], form_only: bool
) -> tuple[transcribe.Transcript, dict[str, str]]:
    """Take a place, save the upload, decode it on the file pool: the transcript and the request's fields
    (form fields, overridden by the query's). harken's endpoint (``query_fields`` given) refuses fields
    it does not know; OpenAI's takes the decoding fields it finds and ignores the rest, as OpenAI does."""
    service = service_of(request)
    strict = bool(query_fields)
    query = dict(request.query_params.items()) if strict else {}
    request_options(query, service, strict)  # a bad option is refused before the upload is read
    with service.place(client_of(request)):
        path, fields = await save_upload(request, service, form_only)
        try:
            fields.update(query)
            options = request_options(fields, service, strict)
            result = await _decode_watched(request, service, path, options)
        finally:
            path.unlink(missing_ok=True)
    return result, fields


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


__all__ = ["MAX_CHANNELS", "plain_path", "request_options", "save_upload", "transcribe_upload"]
