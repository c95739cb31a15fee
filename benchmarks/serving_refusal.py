"""Time to a 429: a burst of chat requests against a server whose batch and queue are full.

Issue 13's target: with the engine running a full batch and the queue full, a burst of 60
requests is refused with p99 <= 50 ms, because admission refuses before the request body is
parsed (and so before the chat template is rendered and the prompt tokenized).

The burst is sent by httpx, each request on a new connection, as an application would. On a
small machine the client shares the cores with the server, and httpx spends over a millisecond
of CPU per request, so two more numbers say whose time it is: the same burst from a raw-socket
client (`raw_client_*`: mostly the server's time), and the httpx burst against a server that
refuses with no work at all (`client_floor_*`, see refusing_server.py).

benchmarks/serving.py runs one burst after its sweep; this script runs only the bursts, on the
same server with the same flags:

    python benchmarks/serving_refusal.py --repeat 3                 # random model, 60 requests
    python benchmarks/serving_refusal.py --refusal-burst 100 --max-queue 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
from server_process import free_port
from serving_servers import ServerProcess, start_localseek, wait_idle

PROMPT = "Summarise the following notes in three bullet points. " * 40
BODY = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16}


async def _timed(client: httpx.AsyncClient, body: dict) -> tuple[int, float]:
    t0 = time.perf_counter()
    try:
        resp = await client.post("/v1/chat/completions", json=body)
        return resp.status_code, time.perf_counter() - t0
    except httpx.HTTPError:
        return 0, time.perf_counter() - t0


@contextlib.contextmanager
def _no_collection_pause():
    """No full garbage collection in this (client) process while a burst is timed.

    The client process holds torch and transformers (it made the random model), and a full
    collection of that heap takes a few hundred milliseconds on this machine: landing inside a
    burst, it added 400-500 ms to the client's side of every request still in flight. That is
    the client's pause, not the server's refusal time, so the heap is collected before the
    burst and collection waits until the burst is over.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _raw_post(port: int, request: bytes) -> tuple[int, float]:
    """One request on a new connection, written and read with asyncio streams: no HTTP client."""
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        length = {k.strip().lower(): v for k, v in fields.items()}[b"content-length"]
        await reader.readexactly(int(length))
        elapsed = time.perf_counter() - t0
        writer.close()
        return int(head.split(b" ", 2)[1]), elapsed
    except (OSError, asyncio.IncompleteReadError, KeyError, ValueError):
        return 0, time.perf_counter() - t0


def _raw_request(path: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _fill(client: httpx.AsyncClient, count: int, max_tokens: int) -> list[asyncio.Task]:
    """`count` long streamed requests that hold the batch and the queue until cancelled."""
    body = {
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }

    async def hold() -> None:
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            async for _ in resp.aiter_bytes():
                pass

    return [asyncio.create_task(hold()) for _ in range(count)]


async def _until_full(client: httpx.AsyncClient, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        load = (await client.get("/load")).json()
        if load["running"] >= load["capacity"] and load["waiting"] >= load["max_queue"]:
            return load
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the server did not fill up within {timeout}s: {load}")


async def refusal_burst(url: str, n: int, max_tokens: int) -> dict:
    """Fill the batch and the queue, then send `n` chat requests at once, from httpx and then
    from raw sockets; the 429s' latency."""
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        load = (await client.get("/load")).json()
        holders = await _fill(client, load["capacity"] + load["max_queue"], max_tokens)
        try:
            await _until_full(client)
            with _no_collection_pause():
                results = await asyncio.gather(*(_timed(client, BODY) for _ in range(n)))
            await _until_full(client)
            request = _raw_request("/v1/chat/completions", BODY)
            port = int(url.rsplit(":", 1)[1])
            with _no_collection_pause():
                raw = await asyncio.gather(*(_raw_post(port, request) for _ in range(n)))
        finally:
            for task in holders:
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
    return {"burst": n, **_summary("refusal", results), **_summary("raw_client", raw)}


async def _floor_burst(url: str, n: int) -> list[tuple[int, float]]:
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        with _no_collection_pause():
            return await asyncio.gather(*(_timed(client, BODY) for _ in range(n)))


def client_floor(n: int, log_dir: Path) -> dict:
    """The httpx burst against refusing_server.py: what this client scores on this machine
    against a server that does nothing but refuse."""
    port = free_port()
    script = Path(__file__).with_name("refusing_server.py")
    argv = [sys.executable, str(script), "--port", str(port)]
    server = ServerProcess("refusing", argv, port, log_dir)
    try:
        return _summary("client_floor", asyncio.run(_floor_burst(server.url, n)))
    finally:
        server.stop()


def _summary(name: str, results: list[tuple[int, float]]) -> dict:
    refused = sorted(s for status, s in results if status == 429)
    other: dict[str, int] = {}
    for status, _ in results:
        if status != 429:
            other[str(status)] = other.get(str(status), 0) + 1
    return {
        f"{name}_429s": len(refused),
        f"{name}_p50_ms": _ms(refused, 50),
        f"{name}_p99_ms": _ms(refused, 99),
        f"{name}_max_ms": _ms(refused, 100),
        f"{name}_other_statuses": other,
    }


def _ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))
    return round(values[index] * 1000, 1)


def main() -> None:
    """The refusal bursts alone: `--repeat` of them, then the client floor."""
    import serving  # its model shape and server flags; imported here, as it imports this module

    p = argparse.ArgumentParser(description="every other flag is benchmarks/serving.py's")
    p.add_argument("--repeat", type=int, default=3, help="bursts against one server")
    own, rest = p.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    args = serving.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tiny_models import make_tiny_model

            model = str(make_tiny_model(Path(tmp), "llama", **serving.MODEL_SHAPE))
        local = start_localseek(model, args, Path(tmp))
        try:
            for _ in range(own.repeat):
                wait_idle(local.url)
                result = refusal_burst(local.url, args.refusal_burst, 8 * args.max_tokens)
                print(json.dumps(asyncio.run(result)), flush=True)
        finally:
            local.stop()
        print(json.dumps(client_floor(args.refusal_burst, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
