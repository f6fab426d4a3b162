"""``harken serve`` under abuse, as an attacker on the same machine would try it (loopback only, every loop
bounded in count and time): absurd decoding options, unknown fields, half-open sockets, floods of tiny
WebSocket messages, clients that never end or never read, requests abandoned mid-decode. After each, the
service must answer a normal request with the same transcript as before, and its memory must be back
within a bound."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import soundfile
from test_server import KEY, WAV, Server, pcm_of, received, running, tiny_model
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from harken import audio

from conftest import wait_until

__all__ = ["tiny_model"]  # the fixture, shared with test_server
LIMITS = ["--workers", "1", "--max_queued", "2", "--max_streams", "4", "--idle_timeout", "2",
          "--header_timeout", "2", "--max_connections", "60", "--max_connections_per_client", "30",
          "--max_beam_width", "64", "--max_candidates", "3", "--max_hot_words", "5",
          "--max_requests_per_client", "2", "--max_streams_per_client", "3"]  # fmt: skip
MEMORY_MB = 150  # growth allowed after an abuse case, over the service's size after its first requests


@pytest.fixture(scope="module")
def target(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(["--model", str(tiny_model)], tmp_path_factory.mktemp("logs"), *LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def baseline(target: Server) -> tuple[str, float]:
    """The transcript of LDC93S1 before any abuse, and the service's memory then."""
    text = target.post("/v1/transcribe", content=WAV.read_bytes()).json()["text"]
    return text, target.rss_mb()


def still_serves(target: Server, baseline: tuple[str, float]) -> None:
    """The service is up, idle again, answers a normal request as before, and has not grown."""
    wait_until(lambda: target.get("/healthz").json()["requests"] == 0, 60, "the requests to end")
    wait_until(lambda: target.get("/healthz").json()["streams"] == 0, 60, "the streams to end")
    response = target.post("/v1/transcribe", content=WAV.read_bytes())
    assert response.status_code == 200 and response.json()["text"] == baseline[0]
    assert target.rss_mb() < baseline[1] + MEMORY_MB, (target.rss_mb(), baseline[1])


BAD_OPTIONS = [  # (query, the words the one-line error must hold)
    ("beam_width=100000000", ["beam_width", "at most 64", "--max_beam_width"]),
    ("beam_width=65", ["beam_width", "at most 64"]),
    ("beam_width=" + "9" * 5000, ["beam_width", "at most 64"]),
    ("beam_width=-5", ["beam_width", "whole number"]),
    ("beam_width=0", ["beam_width", "whole number"]),
    ("beam_width=2.5", ["beam_width", "whole number"]),
    ("beam_width=1e9", ["beam_width", "whole number"]),
    ("candidate_transcripts=1000000", ["candidate_transcripts", "at most 3", "--max_candidates"]),
    ("candidate_transcripts=-1", ["candidate_transcripts", "whole number"]),
    ("hot_words=" + quote("a:1,b:1,c:1,d:1,e:1,f:1"), ["hot_words", "6 words", "at most 5"]),
    ("hot_words=" + quote("cat:1e308"), ["hot_words", "boost"]),
    ("hot_words=" + quote("cat:nan"), ["hot_words", "boost"]),
    ("hot_words=" + quote("cat:-inf"), ["hot_words", "boost"]),
    ("hot_words=" + quote("x" * 100 + ":1"), ["hot_words", "longer than 64"]),
    ("hot_words=" + quote("cat"), ["hot_words", "word:boost"]),
    ("scorer=maybe", ["scorer", "true or false"]),
    ("beam_widht=10", ["unknown field", "beam_widht"]),
]


@pytest.mark.parametrize(("query", "words"), BAD_OPTIONS)
def test_every_decoding_option_is_bounded_over_http(
    target: Server, baseline: tuple[str, float], query: str, words: list[str]
) -> None:
    response = target.post(f"/v1/transcribe?{query}", content=WAV.read_bytes())
    message = response.json()["error"]["message"]
    assert response.status_code == 400 and all(word in message for word in words), message
    assert "\n" not in message and len(message) < 200
    form = dict(part.split("=", 1) for part in [query])  # the same field in a multipart form
    form = {key: value.replace("%3A", ":").replace("%2C", ",") for key, value in form.items()}
    files = {"file": ("a.wav", WAV.read_bytes())}
    response = httpx.post(target.url + "/v1/transcribe", headers=target.headers, files=files, data=form)
    assert response.status_code == 400, response.text


def test_every_decoding_option_is_bounded_over_websocket(target: Server, baseline: tuple[str, float]) -> None:
    pcm, rate = pcm_of(WAV)

    async def in_url(query: str) -> tuple[int, str]:
        with pytest.raises(InvalidStatus) as refusal:
            async with connect(
                f"{target.stream_url}?sample_rate={rate}&{query}", additional_headers=target.headers
            ):
                pass
        response = refusal.value.response
        return response.status_code, json.loads(response.body or b"{}")["error"]["message"]

    async def in_first_message(config: dict[str, Any]) -> tuple[int | None, list[dict[str, Any]]]:
        async with connect(target.stream_url, additional_headers=target.headers) as ws:
            await ws.send(json.dumps({"sample_rate": rate, **config}))
            await ws.send(pcm)
            await ws.send('{"eof": 1}')
            messages = await received(ws, 60)
        return ws.close_code, messages

    for query, words in BAD_OPTIONS:
        status, message = asyncio.run(in_url(query))
        assert status == 400 and all(word in message for word in words), (query, message)
    for config, word in [({"beam_width": 10**12}, "beam_width"), ({"beam_width": 2.5}, "beam_width"),
                         ({"candidate_transcripts": -3}, "candidate_transcripts"),
                         ({"nonsense": [1] * 1000}, "nonsense"),
                         ({"beam_width": {"deep": [1, 2, 3]}}, "beam_width")]:  # fmt: skip
        code, messages = asyncio.run(in_first_message(config))
        assert code == 1008 and messages[0]["type"] == "error" and word in messages[0]["error"], messages
    still_serves(target, baseline)


def _half_open(server: Server) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    return connection


def test_half_open_sockets_lock_no_one_out(target: Server, baseline: tuple[str, float]) -> None:
    """Far more half-open sockets than --max_connections from one address: each new client closes the
    longest-waiting of them, /healthz and requests answer at once, and each left over is closed with a
    JSON 408 after --header_timeout."""
    sockets = [_half_open(target) for _ in range(150)]
    try:
        health = httpx.get(target.url + "/healthz", timeout=10)  # no key: load balancers probe without
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert target.post("/v1/transcribe", content=WAV.read_bytes()).json()["text"] == baseline[0]
        answers = []
        for connection in sockets[-5:]:  # the newest: closed by the header deadline
            connection.settimeout(30)
            answers.append(connection.recv(65536))
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408") and b"application/json" in head
            assert "--header_timeout" in json.loads(body)["error"]["message"]
    finally:
        for connection in sockets:
            connection.close()
    still_serves(target, baseline)


def test_a_trickled_request_head_is_cut_off(target: Server, baseline: tuple[str, float]) -> None:
    """Bytes that keep coming do not restart the header clock (slowloris)."""
    connection = socket.create_connection(("127.0.0.1", target.port), timeout=30)
    with connection:
        deadline = time.monotonic() + 20
        answer = b""
        for (
            byte
        ) in b"GET /healthz HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx":
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                break
            connection.settimeout(0.2)
            try:
                answer = connection.recv(65536)
                break
            except TimeoutError:
                pass
            assert time.monotonic() < deadline, "the trickle was never cut off"
    assert answer.startswith(b"HTTP/1.1 408"), answer
    still_serves(target, baseline)


def test_malformed_requests_get_json(target: Server, baseline: tuple[str, float]) -> None:
    upgrade = (
        "GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 99\r\n\r\n"
    )
    for request in (b"GARBAGE\x00\x01 / HTTP/9.9\r\n\r\n", upgrade.encode()):
        with socket.create_connection(("127.0.0.1", target.port), timeout=20) as connection:
            connection.sendall(request)
            head, _, body = connection.recv(65536).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and json.loads(body)["error"]["code"] == 400
    still_serves(target, baseline)


def test_a_flood_of_tiny_websocket_messages(target: Server, baseline: tuple[str, float]) -> None:
    """2,000 two-byte messages at about 1,000 a second, then eof: the stream decodes them as audio."""
    pcm, rate = pcm_of(WAV)

    async def flood() -> list[dict[str, Any]]:
        async with connect(
            f"{target.stream_url}?sample_rate={rate}", additional_headers=target.headers
        ) as ws:
            for index in range(2000):
                await ws.send(pcm[2 * index : 2 * index + 2])
                if index % 100 == 99:
                    await asyncio.sleep(0.1)
            await ws.send('{"eof": 1}')
            return await received(ws, 60)

    messages = asyncio.run(flood())
    assert messages[-1]["type"] == "final"
    still_serves(target, baseline)


def test_a_client_that_never_reads_or_never_ends(target: Server, baseline: tuple[str, float]) -> None:
    """One stream sends half a minute of audio as fast as it can and reads nothing; another sends a little and
    never sends eof. A normal stream beside them works, and both are closed by the service's timers."""
    pcm, rate = pcm_of(WAV)
    half_minute = pcm * 10

    async def scenario() -> list[dict[str, Any]]:
        url = f"{target.stream_url}?sample_rate={rate}"
        async with (
            connect(url, additional_headers=target.headers, max_queue=1) as deaf,
            connect(url, additional_headers=target.headers) as endless,
        ):
            await deaf.send(half_minute)
            await endless.send(pcm[:3200])
            async with connect(url, additional_headers=target.headers) as normal:
                await normal.send(pcm)
                await normal.send('{"eof": 1}')
                return await received(normal, 60)

    messages = asyncio.run(scenario())
    assert messages[-1]["type"] == "final"
    still_serves(target, baseline)


def test_an_abandoned_request_stops_its_decode(
    target: Server, baseline: tuple[str, float], tmp_path: Path
) -> None:
    """A client that gives up on a long file (4 minutes, decoded a stretch at a time, at the widest beam
    the service allows so that it takes a while) stops its decode at the next stretch: /healthz counts it
    as cancelled, and the single worker is free again."""
    speech = audio.read(WAV, 16000)
    long = tmp_path / "long.flac"
    pieces = np.concatenate([np.concatenate([speech, np.zeros(8000, np.float32)])] * 70)
    soundfile.write(str(long), pieces, 16000)
    before = target.get("/healthz").json()["cancelled"]
    body = long.read_bytes()
    head = f"POST /v1/transcribe?beam_width=64 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
    with socket.create_connection(("127.0.0.1", target.port), timeout=60) as connection:
        connection.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: target.get("/healthz").json()["requests"] == 1, 60, "the upload")
        time.sleep(1.0)  # decoding its first stretch
    # the client has given up
    wait_until(lambda: target.get("/healthz").json()["cancelled"] == before + 1, 120, "the cancellation")
    still_serves(target, baseline)


def test_the_key_is_checked_before_the_options(target: Server) -> None:
    response = httpx.post(
        target.url + "/v1/transcribe?beam_width=100000000", content=WAV.read_bytes(), timeout=20
    )
    assert response.status_code == 401 and KEY not in response.text


def test_truncated_and_empty_uploads(target: Server, baseline: tuple[str, float]) -> None:
    """A cut WAV is transcribed as far as it goes with a warning that does not show the server's paths;
    an empty or headerless body is refused with one line."""
    cut = target.post("/v1/transcribe", content=WAV.read_bytes()[:20000])
    assert cut.status_code == 200 and "truncated" in cut.json()["warning"], cut.text
    assert "/tmp" not in cut.text and "upload-" not in cut.text
    for body in (b"", b"RIFF\x00\x00\x00\x00WAVE", b"\x00" * 1000):
        refused = target.post("/v1/transcribe", content=body)
        assert refused.status_code == 400 and "/tmp" not in refused.text, refused.text
    still_serves(target, baseline)


def test_a_message_that_breaks_the_json_parser_frees_its_stream(
    target: Server, baseline: tuple[str, float]
) -> None:
    """A deeply nested JSON text message (RecursionError in the parser) as the first message or after
    audio: the stream closes 1003 and gives its place back, however many times it is sent."""
    pcm, rate = pcm_of(WAV)
    nested = "[" * 20000 + "]" * 20000

    async def send(url: str, first: bytes | None) -> int | None:
        async with connect(url, additional_headers=target.headers) as ws:
            if first is not None:
                await ws.send(first)
            await ws.send(nested)
            await received(ws, 30)
        return ws.close_code

    for _ in range(6):  # more than --max_streams 4
        assert asyncio.run(send(target.stream_url, None)) == 1003
        assert asyncio.run(send(f"{target.stream_url}?sample_rate={rate}", pcm[:3200])) == 1003
    still_serves(target, baseline)


def test_uploads_at_absurd_rates_and_odd_digits(
    target: Server, baseline: tuple[str, float], tmp_path: Path
) -> None:
    for rate in (1, 1_000_003, 2_147_483_647):
        odd = tmp_path / f"rate{rate}.wav"
        odd.write_bytes(WAV.read_bytes()[:44])
        header = bytearray(odd.read_bytes())
        header[24:28] = rate.to_bytes(4, "little")  # the fmt chunk's sample rate
        header[28:32] = (2 * rate % 2**32).to_bytes(4, "little")
        odd.write_bytes(bytes(header) + b"\x00\x01" * 16000)
        response = target.post("/v1/transcribe", content=odd.read_bytes())
        assert response.status_code == 400 and "4000-192000 Hz" in response.json()["error"]["message"]
    for query in ("beam_width=%C2%B2", "candidate_transcripts=%C2%B9"):  # superscript digits
        response = target.post(f"/v1/transcribe?{query}", content=WAV.read_bytes())
        assert response.status_code == 400 and "whole number" in response.json()["error"]["message"]
    still_serves(target, baseline)


def test_a_client_that_never_reads_its_answers_is_dropped(tiny_model: Path, tmp_path: Path) -> None:
    """As many connections as one address may hold (4 here), each with 600 pipelined requests whose
    answers it never reads: each is dropped after --idle_timeout without progress, and the address is
    served again (before, those connections held their places for ever: 429 for everything)."""
    request = b"GET /static/app.js HTTP/1.1\r\nHost: x\r\n\r\n" * 600
    flags = ("--max_connections_per_client", "4", "--idle_timeout", "2")
    with running(["--model", str(tiny_model)], tmp_path, *flags) as server:
        sockets = []
        try:
            for _ in range(4):
                connection = socket.socket()
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                connection.settimeout(20)
                connection.connect(("127.0.0.1", server.port))
                connection.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    connection.send(request)  # as much as the socket takes: the server reads the rest later
                sockets.append(connection)

            def served() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(server.url + "/healthz", timeout=5).status_code == 200
                return False

            wait_until(served, 60, "the address to be served again")
        finally:
            for connection in sockets:
                connection.close()


def test_keys_in_any_spelling_stay_out_of_the_log(target: Server) -> None:
    pcm, rate = pcm_of(WAV)

    async def stream(query: str) -> None:
        async with connect(f"{target.stream_url}?sample_rate={rate}&{query}") as ws:
            await ws.send('{"eof": 1}')
            await received(ws, 30)

    for query in (f"api%5Fkey={KEY}", f"%61pi_key={KEY}", f"API_KEY={KEY}"):
        with contextlib.suppress(InvalidStatus):
            asyncio.run(stream(query))
    assert KEY not in target.log.read_text()


def test_slow_clients_of_one_address_leave_places_for_others(
    target: Server, baseline: tuple[str, float]
) -> None:
    """Uploads that trickle in hold their places only up to --max_requests_per_client (2) for their
    address: its next request is answered 429, while a client at another loopback address is served."""
    head = f"POST /v1/transcribe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
    slow = []
    try:
        for _ in range(2):
            connection = socket.create_connection(("127.0.0.1", target.port), timeout=20)
            connection.sendall(f"{head}Content-Length: 100000\r\n\r\n".encode() + b"RIFF")
            slow.append(connection)
        wait_until(lambda: target.get("/healthz").json()["requests"] == 2, 30, "two uploads in flight")
        refused = target.post("/v1/transcribe", content=WAV.read_bytes())
        assert (
            refused.status_code == 429 and "--max_requests_per_client" in refused.json()["error"]["message"]
        )
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=other, headers=target.headers, timeout=60) as client:
            served = client.post(target.url + "/v1/transcribe", content=WAV.read_bytes())
        assert served.status_code == 200 and served.json()["text"] == baseline[0]
    finally:
        for connection in slow:
            connection.close()
    still_serves(target, baseline)
