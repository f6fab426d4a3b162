"""Load on ``harken serve`` over loopback: live streams, HTTP requests, memory per open stream.

    .venv/bin/python bench/serve_load.py [--model runs/demo/checkpoints | model.int8.onnx] [--seconds 8]
        [--max_n 128] [--decoders greedy,default] [--batching on,off] [--serve_args "..."]

Every combination of --decoders (greedy: --beam_width 1; default: the service's own decoder) and
--batching (on: the live streams' steps batched, --batch_streams; off: each stream alone) runs against
its own server, in turn, in one run, and a last table puts them side by side.

1. Streams: N clients each send 20 ms frames of speech paced by the wall clock (real time) for
   --seconds, then eof. N keeps up when no stream is refused or dropped, every partial result arrives
   within 300 ms of the audio it covers (its ``time``: seconds decoded when it was sent) and every last
   final within 300 ms of the end of the audio. N grows (1, 2, 4, 8, 12, 16, 24, ...) until it does not keep
   up or passes --max_n; the largest N that kept up is the figure.
2. HTTP: --clients clients post a 5 s file (WAV) for --http_seconds: requests per second, median and p95.
3. Memory: the server's resident memory with --open streams open (each fed 1 s of audio) minus before, per
   stream.

The clients run in this process, on the same cores as the server: on a small machine they take a share of
the CPU. Every loop is bounded in count and time, and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import connect

from harken import audio, checkpoint, export
from harken.config import ExportConfig

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench-serve"
RATE = 16000
FRAME = RATE // 50  # 20 ms
LIMIT = 0.3  # seconds behind real time


def speech(seconds: float) -> np.ndarray:
    """int16 speech: the demo corpus's test utterances if there, else LDC93S1, repeated to ``seconds``."""
    corpus = ROOT / "runs" / "demo" / "corpus"
    paths = sorted(corpus.glob("**/*.wav"))[:40] or [ROOT / "tests" / "data" / "LDC93S1.wav"]
    pieces, total = [], 0
    while total < seconds * RATE:
        for path in paths:
            pieces.append(audio.read(path, RATE))
            total += len(pieces[-1])
    return audio.to_pcm16(np.concatenate(pieces)[: int(seconds * RATE)])


def model_file(source: Path) -> Path:
    """An .onnx as given, or the ONNX export of a checkpoint directory (made once, in runs/bench-serve)."""
    if source.suffix == ".onnx":
        return source
    target = WORK / "onnx" / "model.onnx"
    if not target.is_file():
        check = WORK / "check.wav"
        check.parent.mkdir(parents=True, exist_ok=True)
        audio.write(check, audio.from_pcm16(speech(3.0)), RATE)
        export.export(checkpoint.load_model(source), ExportConfig(export_dir=str(target.parent)), check)
    return target


@contextlib.contextmanager
def server(model: Path, extra: list[str]) -> Any:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "harken", "serve", "--model", str(model), "--port", str(port),
               "--max_streams", "256", "--max_queued", "64", *extra]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(60)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024


async def live_stream(url: str, pcm: np.ndarray, delay: float) -> dict[str, Any]:
    """One real-time client: its worst lag behind real time, and whether it ended properly."""
    await asyncio.sleep(delay)
    lags: list[float] = []
    try:
        async with connect(f"{url}/v1/stream?sample_rate={RATE}", max_queue=None) as ws:

            async def read() -> list[dict[str, Any]]:
                messages = []
                async for raw in ws:
                    message = json.loads(raw)
                    now = time.monotonic() - start
                    if message["type"] == "partial":
                        lags.append(now - message["time"])
                    messages.append({**message, "at": now})
                return messages

            start = time.monotonic()
            reader = asyncio.create_task(read())
            for index in range(0, len(pcm) // FRAME):
                wait = start + (index + 1) * FRAME / RATE - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await ws.send(pcm[index * FRAME : (index + 1) * FRAME].tobytes())
            await ws.send(json.dumps({"eof": 1}))
            messages = await reader
        last = messages[-1]
        ok = last["type"] == "final" and ws.close_code == 1000
    except Exception as error:  # refused or dropped
        return {"ok": False, "lag": float("inf"), "final": float("inf"), "error": type(error).__name__}
    return {"ok": ok, "lag": max(lags, default=0.0), "final": last["at"] - len(pcm) / RATE}


async def streams(url: str, n: int, pcm: np.ndarray) -> dict[str, Any]:
    results = await asyncio.gather(*(live_stream(url, pcm, i * 0.02 / n) for i in range(n)))
    worst, final = max(r["lag"] for r in results), max(r["final"] for r in results)
    kept_up = all(r["ok"] for r in results) and worst <= LIMIT and final <= LIMIT
    return {"n": n, "kept_up": kept_up, "worst_lag": worst, "final_lag": final,
            "dropped": sum(not r["ok"] for r in results)}  # fmt: skip


async def http_load(url: str, body: bytes, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        while time.monotonic() < deadline:
            start = time.monotonic()
            response = await http.post("/v1/transcribe", content=body)
            if response.status_code == 200:
                latencies.append(time.monotonic() - start)
            else:
                failures += 1

    began = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    elapsed = time.monotonic() - began
    latencies.sort()
    return {"requests_per_s": len(latencies) / elapsed, "p50": statistics.median(latencies),
            "p95": latencies[int(0.95 * (len(latencies) - 1))], "failures": failures}  # fmt: skip


async def memory(url: str, pid: int, count: int, pcm: np.ndarray) -> float:
    await asyncio.sleep(0.5)
    before = rss_mb(pid)
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(connect(f"{url}/v1/stream?sample_rate={RATE}"))
            for _ in range(count)
        ]
        for ws in sockets:
            await ws.send(pcm[:RATE].tobytes())
        await asyncio.sleep(2.0)
        during = rss_mb(pid)
        for ws in sockets:
            await ws.send(json.dumps({"eof": 1}))
    return (during - before) / count


def search(url: str, pcm: np.ndarray, max_n: int) -> int:
    """The largest N of real-time streams that keeps up (0: not even one)."""
    best = 0
    for n in (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96, 128, 160, 192, 256):
        if n > max_n:
            break
        result = asyncio.run(streams(url, n, pcm))
        verdict = "keeps up" if result["kept_up"] else "falls behind"
        lag, final, dropped = result["worst_lag"] * 1000, result["final_lag"] * 1000, result["dropped"]
        print(f"  streams N={n:3d}: partials at most {lag:5.0f} ms behind, last final {final:5.0f} ms "
              f"after the audio, dropped {dropped} -> {verdict}", flush=True)  # fmt: skip
        if not result["kept_up"]:
            break
        best = n
    return best


DECODERS = {"greedy": ["--beam_width", "1"], "default": []}
BATCHING = {"on": ["--batch_streams", "true"], "off": ["--batch_streams", "false"]}


def measure(
    model: Path, flags: list[str], args: argparse.Namespace, pcm: np.ndarray, five: Path
) -> dict[str, Any]:
    """One server's figures: memory per stream, the largest N of real-time streams, HTTP throughput."""
    with server(model, flags) as (url, pid):
        ws_url = url.replace("http://", "ws://")
        idle = rss_mb(pid)
        per_stream = asyncio.run(memory(ws_url, pid, args.open, pcm))
        rest = f"server at rest: {idle:.0f} MB"
        print(f"  memory per open stream ({args.open} open): {per_stream:.2f} MB ({rest})")
        best = search(ws_url, pcm[: int(args.seconds * RATE)], args.max_n)
        load = asyncio.run(http_load(url, five.read_bytes(), args.clients, args.http_seconds))
        timing = f"median {load['p50'] * 1000:.0f} ms, p95 {load['p95'] * 1000:.0f} ms"
        rate = f"{load['requests_per_s']:.1f} requests/s"
        print(f"  HTTP, 5 s files, {args.clients} clients: {rate} ({timing}, failures {load['failures']})")
    return {"streams": best, "rps": load["requests_per_s"], "mb": per_stream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "demo" / "checkpoints")
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per live stream")
    parser.add_argument("--max_n", type=int, default=128)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--http_seconds", type=float, default=10.0)
    parser.add_argument("--open", type=int, default=32, help="streams held open for the memory figure")
    parser.add_argument("--decoders", default="greedy,default", help="greedy and/or default, comma-separated")
    parser.add_argument("--batching", default="on,off", help="on and/or off, comma-separated")
    parser.add_argument("--serve_args", default="", help="more flags for every harken serve")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    model = model_file(args.model)
    pcm = speech(max(args.seconds, 5.0))
    five = WORK / "five.wav"
    audio.write(five, audio.from_pcm16(pcm[: 5 * RATE]), RATE)
    print(f"model {model} ({model.stat().st_size / 1e6:.1f} MB), serve flags: {args.serve_args or '(none)'}")
    rows = []
    for decoder in args.decoders.split(","):
        for batching in args.batching.split(","):
            print(f"decoder {decoder}, batching {batching}:", flush=True)
            flags = [*DECODERS[decoder], *BATCHING[batching], *shlex.split(args.serve_args)]
            rows.append((decoder, batching, measure(model, flags, args, pcm, five)))
    print(f"\nreal-time 20 ms streams with every partial and last final within {LIMIT * 1000:.0f} ms:")
    print("decoder  batching  streams  HTTP req/s  MB/stream  streams vs batching off")
    for decoder, batching, row in rows:
        off = next((r for d, b, r in rows if d == decoder and b == "off"), None)
        ratio = f"{row['streams'] / off['streams']:.2f}x" if off and off["streams"] else "-"
        print(
            f"{decoder:8s} {batching:9s} {row['streams']:7d}  {row['rps']:10.1f}  {row['mb']:9.2f}  {ratio}"
        )


if __name__ == "__main__":
    main()
