"""harken serve, end to end: a real server process on a free loopback port, real clients (httpx, the
websockets library, Debian's Chromium through Playwright). The fast tests serve an untrained model (what
it says is noise, but every path must say the same noise); the slow ones the LDC93S1-trained model."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harken import audio, checkpoint, cli, export
from harken.config import ExportConfig
from harken.inference import Model
from harken.server import ServerConfig
from harken.server.service import DecodeOptions, ServiceError, configure
from harken.server.utterances import Endpointing, Utterances
from harken.train import build, save

from conftest import DATA, LDC93S1_TEXT, ldc_config, wait_until

KEY = "test-key"
WAV = DATA / "LDC93S1.wav"
STEREO = DATA / "LDC93S1_pcms16le_2_44100.wav"
# The fast server's limits, small enough to reach in a test.
LIMITS = ["--workers", "1", "--max_queued", "1", "--max_streams", "2", "--max_upload_mb", "16",
          "--max_audio_seconds", "900", "--idle_timeout", "2", "--max_requests_per_client", "2",
          "--max_streams_per_client", "2"]  # fmt: skip
LONG_WAIT = 240.0  # seconds a test waits for a request that takes seconds here (every wait is bounded)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    headers = {"Authorization": f"Bearer {KEY}"}

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def stream_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/stream"

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024

    def post(self, path: str, timeout: float = 60, **kwargs: Any) -> httpx.Response:
        return httpx.post(
            self.url + path, headers={**self.headers, **kwargs.pop("headers", {})}, timeout=timeout, **kwargs
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running(source: list[str], logs: Path, *flags: str) -> Iterator[Server]:
    """``harken serve`` in its own process until the block ends (then SIGTERM, as a service manager)."""
    port = _free_port()
    log = logs / f"serve-{port}.log"
    command = [
        sys.executable,
        "-m",
        "harken",
        "serve",
        *source,
        "--port",
        str(port),
        "--api_key",
        KEY,
        *flags,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"harken serve exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if server.get("/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def transcribe_command(source: list[str], path: Path, output_format: str, *flags: str) -> str:
    """What ``harken transcribe`` prints for one file."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["transcribe", *source, "--output_format", output_format, *flags, str(path)]) == 0
    return out.getvalue()


def pcm_of(path: Path) -> tuple[bytes, int]:
    """A file's 16-bit PCM (channels averaged, as a microphone would send it) and its rate."""
    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return data.mean(axis=1).round().astype("<i2").tobytes(), int(rate)


async def stream(
    server: Server, pcm: bytes, rate: int, frame_bytes: int, in_url: bool = True
) -> tuple[list[dict[str, Any]], int | None]:
    """Send ``pcm`` in messages of ``frame_bytes`` as fast as it goes, then eof: every message back, and
    the close code."""
    url = f"{server.stream_url}?sample_rate={rate}" if in_url else server.stream_url
    async with connect(url, additional_headers=server.headers) as ws:
        if not in_url:
            await ws.send(json.dumps({"sample_rate": rate}))
        for start in range(0, len(pcm), frame_bytes):
            await ws.send(pcm[start : start + frame_bytes])
        await ws.send(json.dumps({"eof": 1}))
        messages = await received(ws)
    return messages, ws.close_code


def finals(messages: list[dict[str, Any]], every: bool = False) -> list[Any]:
    """The finals' texts (``every``: the whole final messages, empty ones too)."""
    if every:
        return [m for m in messages if m["type"] == "final"]
    return [m["text"] for m in messages if m["type"] == "final" and m["text"]]


async def received(ws: Any, seconds: float = LONG_WAIT) -> list[dict[str, Any]]:
    """Every message until the server closes the socket, whatever the close code (TimeoutError when it
    has not closed it within ``seconds``)."""
    messages: list[dict[str, Any]] = []

    async def read() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                messages.append(json.loads(message))

    await asyncio.wait_for(read(), seconds)
    return messages


def stalled_upload(server: Server) -> socket.socket:
    """A POST that announces 100 kB of body and sends 1 kB of it."""
    head = f"POST /v1/transcribe HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\n"
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    connection.sendall(f"{head}Content-Length: 100000\r\n\r\n".encode() + WAV.read_bytes()[:1000])
    return connection


def status_of(connection: socket.socket) -> int:
    with connection:
        return int(connection.recv(65536).split(b" ", 2)[1])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained n_hidden 32 model, exported."""
    directory = tmp_path_factory.mktemp("tiny")
    save(build(ldc_config(directory / "ckpt", epochs=1, n_hidden=32), log=lambda _: None))
    (result,) = export.export(
        checkpoint.load_model(directory / "ckpt"), ExportConfig(export_dir=str(directory)), WAV
    )
    return result.path


@pytest.fixture(scope="module")
def service(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(["--model", str(tiny_model)], tmp_path_factory.mktemp("logs"), *LIMITS) as server:
        yield server


def same_segments(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> bool:
    """Equal segments; confidences (sums of float log-probabilities) to 1e-5, since the service and the
    command may run the model on different thread counts, which rounds in another order."""
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs, strict=True):
        if {**a, "confidence": 0} != {**b, "confidence": 0}:
            return False
        if a["confidence"] != pytest.approx(b["confidence"], rel=1e-5, abs=1e-6):
            return False
    return True


def _check_every_endpoint(server: Server, source: list[str], path: Path) -> str:
    """Every HTTP shape and the stream give what ``harken transcribe`` gives for ``path``; its text."""
    reference = json.loads(transcribe_command(source, path, "json"))
    body = path.read_bytes()
    got = server.post("/v1/transcribe", content=body).json()
    assert got["text"] == reference["text"] and same_segments(got["segments"], reference["segments"])
    assert got["candidates"][0]["text"] == reference["text"] and got["duration"] == reference["duration"]
    assert got["words"] == [word for segment in reference["segments"] for word in segment["words"]]
    upload = {"file": ("recording.wav", body, "audio/wav")}
    for output_format in ("txt", "srt", "vtt", "tsv"):
        expected = transcribe_command(source, path, output_format)
        response = server.post("/v1/transcribe", params={"output_format": output_format}, files=upload)
        assert response.status_code == 200 and response.text == expected, output_format
    openai = {"model": "whisper-1"}  # what OpenAI's clients send; accepted and ignored
    for response_format in ("srt", "vtt"):
        data = {**openai, "response_format": response_format}
        response = server.post("/v1/audio/transcriptions", files=upload, data=data)
        assert response.text == transcribe_command(source, path, response_format)
    assert server.post("/v1/audio/transcriptions", files=upload, data=openai).json() == {
        "text": reference["text"]
    }
    text = server.post("/v1/audio/transcriptions", files=upload, data={**openai, "response_format": "text"})
    assert text.text == reference["text"] + "\n" and text.headers["content-type"].startswith("text/plain")
    verbose = server.post(
        "/v1/audio/transcriptions", files=upload, data={**openai, "response_format": "verbose_json"}
    )
    assert verbose.json()["text"] == reference["text"] and verbose.json()["duration"] == reference["duration"]
    assert [s["text"] for s in verbose.json()["segments"]] == [s["text"] for s in reference["segments"]]
    pcm, rate = pcm_of(path)
    messages, code = asyncio.run(stream(server, pcm, rate, rate // 50 * 2))
    assert " ".join(finals(messages)) == reference["text"] and code == 1000
    return str(reference["text"])


# ---- the fast tests: an untrained model ------------------------------------------------------------


def test_every_endpoint_gives_what_transcribe_gives(service: Server, tiny_model: Path) -> None:
    for path in (WAV, STEREO):
        _check_every_endpoint(service, ["--model", str(tiny_model)], path)


def test_openai_s_own_client_works_unchanged(service: Server, tiny_model: Path) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=service.url + "/v1", api_key=KEY, max_retries=0)
    reference = json.loads(transcribe_command(["--model", str(tiny_model)], WAV, "json"))
    with WAV.open("rb") as audio_file:
        assert (
            client.audio.transcriptions.create(model="whisper-1", file=audio_file).text == reference["text"]
        )
    with WAV.open("rb") as audio_file:
        verbose = client.audio.transcriptions.create(
            model="whisper-1",
            file=audio_file,
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
    assert verbose.duration == reference["duration"]
    assert [w.word for w in verbose.words or []] == [
        w["word"] for s in reference["segments"] for w in s["words"]
    ]
    with pytest.raises(openai.AuthenticationError), WAV.open("rb") as audio_file:
        openai.OpenAI(
            base_url=service.url + "/v1", api_key="wrong", max_retries=0
        ).audio.transcriptions.create(model="whisper-1", file=audio_file)


def test_streaming_in_20ms_and_1s_frames_gives_the_same_finals(service: Server, tiny_model: Path) -> None:
    model = Model(tiny_model)
    pcm, rate = pcm_of(WAV)
    runs = {size: asyncio.run(stream(service, pcm, rate, size)) for size in (640, 32000, 777)}  # 777: odd
    (messages, code), *others = runs.values()  # partials depend on timing; finals only on the audio
    assert code == 1000 and all(
        finals(other[0], every=True) == finals(messages, every=True) for other in others
    )
    (final,) = [m for m in messages if m["type"] == "final"]  # no pause in LDC93S1: one utterance, the last
    assert final["text"] == " ".join(model.stt(np.frombuffer(pcm, "<i2")).split())
    assert final["start"] == 0.0 and final["end"] == pytest.approx(len(pcm) / 2 / rate, abs=1e-3)
    starts = [word["start"] for word in final["words"]]
    assert starts == sorted(starts) and " ".join(w["word"] for w in final["words"]) == final["text"]
    assert [m["type"] for m in messages].count("partial") >= 1
    # the rate in a first message instead of the URL; an 8 kHz stream is resampled as files are
    in_message = asyncio.run(stream(service, pcm, rate, 640, in_url=False))[0]
    assert finals(in_message, every=True) == finals(messages, every=True)
    low = DATA / "LDC93S1_pcms16le_1_8000.wav"
    low_pcm, low_rate = pcm_of(low)
    reference = json.loads(transcribe_command(["--model", str(tiny_model)], low, "json"))["text"]
    assert " ".join(finals(asyncio.run(stream(service, low_pcm, low_rate, 160))[0])) == reference


def test_utterances_end_at_pauses_wherever_the_messages_are_cut(tiny_model: Path) -> None:
    """Speech, 1 s of silence, speech: two finals at the same sample, for any message size."""
    model = Model(tiny_model)
    speech = audio.to_pcm16(audio.read(WAV, 16000))
    pcm = np.concatenate([speech, np.zeros(16000, np.int16), speech]).tobytes()
    results = []
    for size in (640, 32000, 5001):
        utterances = Utterances(model, 16000, Endpointing(endpoint_ms=600))
        events = [e for i in range(0, len(pcm), size) for e in utterances.feed(pcm[i : i + size])]
        results.append(
            [(e["start"], e["end"], e["text"]) for e in events + utterances.finish() if e["type"] == "final"]
        )
    assert results[0] == results[1] == results[2]
    assert len(results[0]) >= 2 and results[0][-1][1] == pytest.approx(len(pcm) / 2 / 16000, abs=1e-3)
    assert 2.9 < results[0][0][1] < 4.0  # the first ends within the pause


def test_hot_phrases_change_from_the_utterance_not_yet_heard(ldc_model: Path) -> None:
    """Speech, pause, speech, pause, speech, fed in 30 ms pieces (the detector's frames: an utterance ends
    where a piece ends). Hot phrases given as the first final comes decode the second utterance, of which
    nothing has been heard yet; given in the middle of the second one's speech, they wait for the third."""
    model = Model(ldc_model)
    boosted = copy.copy(model)
    boosted.set_hot_words({"wash water all year": 30.0})
    speech = audio.to_pcm16(audio.read(WAV, 16000))
    pcm = np.concatenate([speech, np.zeros(16000, np.int16)] * 2 + [speech])
    piece = 480

    def finals(change: Callable[[int, list[dict[str, Any]]], bool]) -> tuple[list[str], Model]:
        utterances = Utterances(model, 16000, Endpointing(endpoint_ms=600))
        events: list[dict[str, Any]] = []
        changed = False
        for start in range(0, len(pcm), piece):
            events += utterances.feed(pcm[start : start + piece].tobytes())
            if not changed and change(start, events):
                utterances.use(boosted)
                changed = True
        texts = [e["text"] for e in events + utterances.finish() if e["type"] == "final"]
        return texts, utterances.model

    plain, _ = finals(lambda *_: False)
    assert len(plain) == 3 and "all year" not in plain[1], plain  # "... wash water all y usha"
    first, _ = finals(lambda _, events: len(events) > 0 and events[-1]["type"] == "final")
    assert first[0] == plain[0] and "wash water all year" in first[1], first
    middle = len(speech) + 16000 + len(speech) // 2
    second, last = finals(lambda start, _: start >= middle)
    assert second[:2] == plain[:2] and last is boosted, second


def test_a_requests_hot_words_add_to_the_services(tiny_model: Path) -> None:
    model = Model(tiny_model)
    model.set_hot_words({"chair": 1.0, "green": 2.0})
    view = configure(model, DecodeOptions(hot_words=(("green", 5.0), ("green bowl", 3.0))))
    assert view.hot_words == {"chair": 1.0, "green": 5.0, "green bowl": 3.0}
    assert model.hot_words == {"chair": 1.0, "green": 2.0}  # the service's own, untouched
    with pytest.raises(ServiceError, match="hot word 'caf\u00e9'"):
        configure(model, DecodeOptions(hot_words=(("caf\u00e9", 1.0),)))


def test_hot_phrases_in_a_message_mid_stream(service: Server) -> None:
    pcm = WAV.read_bytes()[44:]

    async def change(hot_words: Any) -> tuple[list[dict[str, Any]], int | None]:
        url = f"{service.stream_url}?sample_rate=16000"
        async with connect(url, additional_headers=service.headers) as ws:
            await ws.send(pcm[:32000])
            await ws.send(json.dumps({"hot_words": hot_words}))
            await ws.send(pcm[32000:])
            await ws.send(json.dumps({"eof": 1}))
            return await received(ws), ws.close_code

    def error(messages: list[dict[str, Any]]) -> str:
        (line,) = [m["error"] for m in messages if m["type"] == "error"]
        return str(line)

    messages, code = asyncio.run(change("zebra crossing:5,dog:2"))
    assert code == 1000 and messages[-1]["type"] == "final"
    messages, code = asyncio.run(change("caf\u00e9:1"))
    assert code == 1008 and "hot word 'caf\u00e9'" in error(messages) and messages[-1]["type"] == "final"
    messages, code = asyncio.run(change(",".join(f"w{i}:1" for i in range(500))))
    assert code == 1008 and "at most" in error(messages)
    messages, code = asyncio.run(change(["zebra:1"]))
    assert code == 1003 and "hot_words" in error(messages)

    async def churn() -> tuple[list[dict[str, Any]], int | None]:  # more changes than its audio pays for
        url = f"{service.stream_url}?sample_rate=16000"
        async with connect(url, additional_headers=service.headers) as ws:
            for index in range(50):
                await ws.send(json.dumps({"hot_words": f"zebra:{index % 7 + 1}"}))
                await ws.send(pcm[:640])
            await ws.send(json.dumps({"eof": 1}))
            return await received(ws), ws.close_code

    messages, code = asyncio.run(churn())
    assert code == 1008 and "hot_words: changed 5 times" in error(messages)


def test_health_and_models(service: Server) -> None:
    assert service.get("/healthz").json() == {"status": "ok", "requests": 0, "streams": 0, "cancelled": 0}
    (info,) = service.get("/v1/models").json()["data"]
    assert info["id"] == "model.onnx" and info["sample_rate"] == 16000 and info["streaming"] is True
    assert info["alphabet"][:3] == [" ", "a", "b"] and info["harken_version"]
    page = httpx.get(service.url + "/")  # the page and its scripts are open; the API is not
    assert page.status_code == 200 and "static/app.js" in page.text
    for name in ("app.js", "pcm-worklet.js"):
        assert httpx.get(f"{service.url}/static/{name}").status_code == 200


def test_a_wrong_or_missing_api_key_is_refused(service: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        assert httpx.get(service.url + "/healthz", headers=headers).json()["status"] == "ok"  # probes
        for method, path in [("GET", "/v1/models"), ("POST", "/v1/transcribe"),
                             ("POST", "/v1/audio/transcriptions")]:  # fmt: skip
            response = httpx.request(method, service.url + path, headers=headers, content=WAV.read_bytes())
            assert response.status_code == 401, (path, headers)
            assert "API key" in response.json()["error"]["message"]
            assert response.headers["www-authenticate"] == "Bearer"

    async def refused(url: str, headers: dict[str, str]) -> int:
        with pytest.raises(InvalidStatus) as refusal:
            async with connect(url, additional_headers=headers):
                pass
        return int(refusal.value.response.status_code)

    assert asyncio.run(refused(service.stream_url, {})) == 401
    assert asyncio.run(refused(service.stream_url + "?api_key=wrong", {})) == 401

    async def by_query() -> list[str]:
        async with connect(f"{service.stream_url}?sample_rate=16000&api_key={KEY}") as ws:
            await ws.send(pcm_of(WAV)[0])
            await ws.send('{"eof": 1}')
            return [json.loads(m)["type"] async for m in ws]

    assert asyncio.run(by_query())[-1] == "final"  # browsers give the key in the URL
    assert service.get("/healthz").status_code == 200
    log = service.log.read_text()
    assert "api_key=***" in log and KEY not in log  # the access log does not keep keys


def test_pages_of_other_sites_are_refused_unless_allowed(
    service: Server, tiny_model: Path, tmp_path: Path
) -> None:
    """A browser page of another site (its Origin names another host) may not use the service, over HTTP
    or WebSocket (a WebSocket is not held to the same-origin rules); the service's own page, clients
    without an Origin and the origins --allowed_origins lists may (with CORS answers for the latter)."""
    foreign, own = {"Origin": "https://evil.example"}, {"Origin": service.url}
    response = httpx.get(service.url + "/healthz", headers={**service.headers, **foreign})
    assert response.status_code == 403
    assert "pages of https://evil.example are not allowed" in response.json()["error"]["message"]
    assert httpx.get(service.url + "/healthz", headers={**service.headers, **own}).status_code == 200
    behind_proxy = [  # the page's host as a reverse proxy passes it on, and a default port
        {"Origin": "https://stt.example.org", "X-Forwarded-Host": "stt.example.org"},
        {"Origin": "https://stt.example.org", "Forwarded": 'for=1.2.3.4;host="stt.example.org";proto=https'},
        {"Origin": "https://stt.example.org", "Host": "STT.example.org:443"},
    ]
    for headers in behind_proxy:
        assert httpx.get(service.url + "/healthz", headers={**service.headers, **headers}).status_code == 200

    async def handshake(server: Server, headers: dict[str, str]) -> int:
        try:
            async with connect(f"{server.stream_url}?api_key={KEY}", additional_headers=headers):
                return 101
        except InvalidStatus as refusal:
            return int(refusal.response.status_code)

    assert asyncio.run(handshake(service, foreign)) == 403
    assert asyncio.run(handshake(service, own)) == asyncio.run(handshake(service, {})) == 101
    app = "https://app.example.org"
    with running(["--model", str(tiny_model)], tmp_path, "--allowed_origins", f"{app}/") as server:
        allowed = httpx.get(server.url + "/healthz", headers={**server.headers, "Origin": app})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == app
        preflight = httpx.options(
            server.url + "/v1/transcribe",
            headers={"Origin": app, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
        )  # fmt: skip
        assert (
            preflight.status_code == 200
            and "authorization" in preflight.headers["access-control-allow-headers"].lower()
        )
        assert asyncio.run(handshake(server, {"Origin": app})) == 101
        assert asyncio.run(handshake(server, foreign)) == 403


def test_a_2gb_upload_is_refused_without_reading_it(service: Server) -> None:
    before = service.rss_mb()
    for declared in (True, False):  # Content-Length given (refused at once) or chunked (counted)
        sent = 0

        def body() -> Iterator[bytes]:
            nonlocal sent
            chunk = bytes(1 << 20)
            for _ in range(2048):
                sent += len(chunk)
                yield chunk

        headers = {"Content-Length": str(2048 << 20)} if declared else {}
        response = service.post("/v1/transcribe", content=body(), headers=headers)
        assert response.status_code == 413 and "--max_upload_mb" in response.json()["error"]["message"]
        assert sent < 64 << 20  # the server stopped the upload near its 16 MB limit
    assert service.rss_mb() - before < 50
    assert service.post("/v1/transcribe", content=WAV.read_bytes()).status_code == 200


def test_audio_too_long_non_audio_and_bad_fields_are_refused(service: Server, tmp_path: Path) -> None:
    long = tmp_path / "long.flac"  # 20 minutes of silence in 30 kB, against --max_audio_seconds 900
    soundfile.write(str(long), np.zeros(8000 * 1200, np.float32), 8000, subtype="PCM_16")
    response = service.post("/v1/transcribe", content=long.read_bytes())
    assert response.status_code == 413 and "--max_audio_seconds" in response.json()["error"]["message"]
    cases = [
        ("/v1/transcribe", {"content": b"this is not audio at all" * 100}, "not a readable audio file"),
        (
            "/v1/transcribe",
            {"files": {"file": ("x.wav", b"\x89PNG\r\n" * 64, "image/png")}},
            "not a readable",
        ),
        ("/v1/transcribe", {"content": b""}, "no audio"),
        ("/v1/transcribe", {"files": {"other": (None, "field")}}, "no file"),
        ("/v1/audio/transcriptions", {"content": WAV.read_bytes()}, "multipart/form-data"),
        ("/v1/transcribe?output_format=doc", {"content": WAV.read_bytes()}, "output_format 'doc'"),
        ("/v1/transcribe?beam_width=0", {"content": WAV.read_bytes()}, "beam_width '0'"),
        ("/v1/transcribe?hot_words=coffee", {"content": WAV.read_bytes()}, "expected word:boost"),
        ("/v1/transcribe?hot_words=caf%C3%A9:2", {"content": WAV.read_bytes()}, "cannot spell"),
        ("/v1/transcribe?scorer=true", {"content": WAV.read_bytes()}, "no scorer loaded"),
    ]
    for path, kwargs, message in cases:
        response = service.post(path, **kwargs)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]["message"]
        assert message in error and "\n" not in error and "/tmp" not in error, error
    openai = service.post("/v1/audio/transcriptions", files={"file": ("a.wav", WAV.read_bytes())},
                          data={"response_format": "docx"})  # fmt: skip
    assert openai.status_code == 400 and "response_format 'docx'" in openai.json()["error"]["message"]
    assert (
        service.post("/v1/transcribe?beam_width=1&scorer=false", content=WAV.read_bytes()).status_code == 200
    )
    assert service.get("/nowhere").json()["error"]["code"] == 404


def test_a_long_decode_does_not_stall_the_others(service: Server, tmp_path: Path) -> None:
    speech = audio.read(WAV, 16000)
    long = tmp_path / "long.flac"  # 2 minutes of speech with pauses: split, decoded piece by piece
    audio_pieces = np.concatenate([np.concatenate([speech, np.zeros(8000, np.float32)])] * 35)
    soundfile.write(str(long), audio_pieces, 16000, subtype="PCM_16")
    done: list[httpx.Response] = []
    failed: list[BaseException] = []

    def post() -> None:  # ~16 s on two cores; the bound leaves a machine 15 times slower room
        try:
            done.append(service.post("/v1/transcribe", content=long.read_bytes(), timeout=LONG_WAIT))
        except BaseException as error:  # surfaced below, not lost with the thread
            failed.append(error)

    worker = threading.Thread(target=post, daemon=True)
    worker.start()
    latencies = []
    deadline = time.monotonic() + LONG_WAIT + 10
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=10) as client:
        while worker.is_alive() and time.monotonic() < deadline:
            start = time.monotonic()
            health = client.get("/healthz").json()
            latencies.append((time.monotonic() - start, health["requests"]))
            time.sleep(0.02)
    worker.join(5)
    assert not worker.is_alive(), "the long request neither answered nor failed"
    assert not failed, f"the long request failed: {failed[0]!r}"
    assert done[0].status_code == 200 and len(done[0].json()["segments"]) >= 4  # pieces of at most 30 s
    busy = [seconds for seconds, requests in latencies if requests == 1]
    assert len(busy) >= 10, latencies  # health checks kept being answered while the long file was decoded


def test_a_full_queue_answers_503_and_a_stalled_upload_408(service: Server) -> None:
    holders = [stalled_upload(service) for _ in range(2)]  # --workers 1 --max_queued 1: two places
    wait_until(lambda: service.get("/healthz").json()["requests"] >= 2, 60, "two uploads in flight")
    refused = service.post("/v1/transcribe", content=WAV.read_bytes())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["error"]["message"]
    assert [status_of(holder) for holder in holders] == [408, 408]  # --idle_timeout 2
    assert service.post("/v1/transcribe", content=WAV.read_bytes()).status_code == 200


def test_ten_times_the_stream_limit_is_refused_cleanly(service: Server) -> None:
    pcm, rate = pcm_of(WAV)

    async def scenario() -> tuple[list[int], list[list[str]]]:
        async with contextlib.AsyncExitStack() as stack:

            async def open_one() -> Any:
                try:
                    return await stack.enter_async_context(
                        connect(
                            f"{service.stream_url}?sample_rate={rate}", additional_headers=service.headers
                        )
                    )
                except InvalidStatus as refusal:
                    return refusal.response.status_code

            results = await asyncio.gather(*(open_one() for _ in range(20)))  # --max_streams 2
            statuses = sorted(101 if not isinstance(r, int) else r for r in results)
            sockets = [r for r in results if not isinstance(r, int)]
            outcomes = []
            for ws in sockets:  # the two accepted still work
                await ws.send(pcm)
                await ws.send('{"eof": 1}')
                outcomes.append(finals(await received(ws)))
            return statuses, outcomes

    statuses, outcomes = asyncio.run(scenario())
    assert statuses == [101, 101] + [503] * 18
    assert outcomes[0] == outcomes[1]
    assert service.get("/healthz").json()["streams"] == 0


def test_a_silent_socket_is_closed(service: Server) -> None:
    async def silent(first: str | None) -> tuple[list[dict[str, Any]], int | None, float]:
        start = time.monotonic()
        async with connect(service.stream_url, additional_headers=service.headers) as ws:
            if first is not None:
                await ws.send(first)
            messages = await received(ws)
        return messages, ws.close_code, time.monotonic() - start

    for first in (None, '{"sample_rate": 16000}'):
        messages, code, seconds = asyncio.run(silent(first))  # --idle_timeout 2
        assert code == 1008 and 1.5 < seconds < 20  # closed by the idle timer (room for a slow machine)
        assert messages == [{"type": "error", "error": "nothing received for 2 s (--idle_timeout): closing"}]
    messages, code, _ = asyncio.run(silent('{"rate": 16000}'))
    assert code == 1003 and "sample_rate" in messages[0]["error"]
    messages, code, _ = asyncio.run(silent('{"sample_rate": 16000, "hot_words": "caf\u00e9:1"}'))
    assert code == 1008 and "cannot spell" in messages[0]["error"]

    async def bad_rate() -> None:
        async with connect(service.stream_url + "?sample_rate=nine", additional_headers=service.headers):
            pass

    with pytest.raises(InvalidStatus) as refusal:
        asyncio.run(bad_rate())
    assert refusal.value.response.status_code == 400


def test_shutdown_finishes_the_streams_and_requests_in_flight(tiny_model: Path, tmp_path: Path) -> None:
    pcm, rate = pcm_of(WAV)
    speech = audio.read(WAV, 16000)
    long = tmp_path / "long.wav"
    audio.write(long, np.concatenate([speech] * 8), 16000)
    with running(["--model", str(tiny_model)], tmp_path) as server:

        async def scenario() -> tuple[list[dict[str, Any]], int | None, int]:
            url = f"{server.stream_url}?sample_rate={rate}"
            async with connect(url, additional_headers=server.headers) as ws:
                await ws.send(pcm)  # no eof: the shutdown ends the utterance
                post = asyncio.to_thread(server.post, "/v1/transcribe", content=long.read_bytes())
                request = asyncio.create_task(post)
                deadline = time.monotonic() + 60
                while (await asyncio.to_thread(server.get, "/healthz")).json()["requests"] < 1:
                    assert time.monotonic() < deadline, "the request never arrived"
                    await asyncio.sleep(0.01)
                server.process.send_signal(signal.SIGTERM)
                messages = await received(ws)
            return messages, ws.close_code, (await request).status_code

        messages, code, status = asyncio.run(scenario())
        assert server.process.wait(30) in (0, -signal.SIGTERM)
    assert code == 1001 and status == 200
    last = messages[-1]
    assert last["type"] == "final" and last["end"] == pytest.approx(len(pcm) / 2 / rate, abs=1e-3)
    assert "Shutting down" in server.log.read_text()


def test_options_are_checked_and_the_key_can_come_from_the_environment(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--model", str(tiny_model), "--max_streams", "0"]) == 2
    assert capsys.readouterr().err.strip() == "harken: error: --max_streams 0: must be 1 or more"
    monkeypatch.setenv("HARKEN_API_KEY", "from-env")
    served: list[ServerConfig] = []
    monkeypatch.setattr("harken.server.serve", lambda model, config, name: served.append(config))
    assert cli.main(["serve", "--model", str(tiny_model)]) == 0
    assert cli.main(["serve", "--model", str(tiny_model), "--api_key", "given"]) == 0
    assert [config.api_key for config in served] == ["from-env", "given"]
    resolved = ServerConfig().resolved()  # the library reads no environment
    assert resolved.api_key == "" and resolved.workers >= 1 and resolved.host == "127.0.0.1"


# ---- the slow tests: the LDC93S1-trained model, and a real browser -----------------------------------


@pytest.fixture(scope="module")
def trained_onnx(ldc_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("trained")
    (result,) = export.export(checkpoint.load_model(ldc_model), ExportConfig(export_dir=str(directory)), WAV)
    return result.path


@pytest.mark.slow
def test_the_trained_model_through_every_endpoint(
    trained_onnx: Path, ldc_model: Path, tmp_path: Path
) -> None:
    for source in (["--model", str(trained_onnx)], ["--checkpoint_dir", str(ldc_model)]):
        with running(source, tmp_path, *LIMITS) as server:
            for path in (WAV, STEREO):
                assert _check_every_endpoint(server, source, path) == LDC93S1_TEXT
            pcm, rate = pcm_of(WAV)
            for size in (640, 32000):
                assert finals(asyncio.run(stream(server, pcm, rate, size))[0]) == [LDC93S1_TEXT]


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(
            "Debian's chromium is not installed: apt-get install -y chromium (make test-slow does, as root)"
        )
    pytest.importorskip("playwright", reason="pip install playwright (the dev extra has it)")
    return path


@pytest.mark.slow
def test_the_page_records_from_the_microphone_and_transcribes_files(
    trained_onnx: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    speech = audio.read(WAV, 16000)
    microphone = tmp_path / "microphone.wav"  # what the fake microphone plays, looping: speech, then a pause
    audio.write(
        microphone, np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(16000, np.float32)]), 16000
    )
    artifacts = Path(
        os.environ.get("HARKEN_TEST_ARTIFACTS", Path(__file__).parents[1] / "runs" / "test-artifacts")
    )
    with running(["--model", str(trained_onnx)], tmp_path) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={microphone}", "--no-sandbox"],
        )  # fmt: skip
        try:
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url)  # the page asks for the API key the service wants
            page.wait_for_selector("#key-form", state="visible", timeout=20_000)
            page.fill("#key", KEY)
            page.click("#key-form button")
            page.wait_for_function("!document.getElementById('record').disabled", timeout=20_000)
            assert "16000 Hz" in page.text_content("#model")
            page.click("#record")
            heard = (
                "document.getElementById('transcript').textContent.includes('dark suit in greasy wash water')"
            )
            page.wait_for_function(heard, timeout=30_000)
            page.screenshot(path=str(tmp_path / "live.png"))
            page.click("#record")  # stop: the last final settles
            page.wait_for_function(
                "document.getElementById('record').textContent === 'Record'", timeout=20_000
            )
            assert "dark suit in greasy wash water" in page.text_content("#finals")
            page.click("#clear")
            page.set_input_files("#file", str(WAV))
            page.click("#upload")
            page.wait_for_function(
                f"document.getElementById('finals').textContent === '{LDC93S1_TEXT}'", timeout=20_000
            )
            for output_format in ("srt", "vtt"):
                with page.expect_download() as download:
                    page.click(f"#download-{output_format}")
                saved = Path(download.value.path()).read_text()
                assert saved == transcribe_command(["--model", str(trained_onnx)], WAV, output_format)
            page.screenshot(path=str(tmp_path / "page.png"))
            assert not errors, errors
        finally:
            browser.close()
    artifacts.mkdir(parents=True, exist_ok=True)
    for name in ("live.png", "page.png"):
        shutil.copy(tmp_path / name, artifacts / f"server-{name}")
