"""Failover: upstreams that die mid-stream or under load; the client never sees the failure."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest

from .conftest import chat
from .fakes import full_answer
from .servers import spawn_fake, stop_process


def read_stream(response: httpx.Response, route: str = "chat") -> tuple[str, list[dict]]:
    text, events = "", []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            event = json.loads(line[6:])
            events.append(event)
            for c in event.get("choices", []):
                text += (
                    c.get("delta", {}).get("content") if route == "chat" else c.get("text")
                ) or ""
    return text, events


def test_stream_cut_mid_answer_is_continued_on_another_upstream(fake, gateway):
    dying = fake("dying", die_after_chunks=3, answer_tokens=12)
    spare = fake("spare", answer_tokens=12)
    url = gateway({"upstreams": [dying.upstream(), spare.upstream(backup=True)]})
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=chat(stream=True, max_tokens=20), timeout=20
    ) as r:
        text, events = read_stream(r)
    assert text == full_answer(12)  # one unbroken answer
    assert not any("error" in e for e in events)
    assert len({e["id"] for e in events}) == 1  # one stream id, though two upstreams served it
    continuation = spare.completions()[0]["body"]
    assert continuation["messages"][-1] == {"role": "assistant", "content": "w0 w1 w2 "}
    assert continuation["continue_final_message"] is True
    assert continuation["max_tokens"] == 17


def test_completions_stream_is_continued_from_prompt_plus_partial(fake, gateway):
    dying = fake("dying", die_after_chunks=2, answer_tokens=6)
    spare = fake("spare", answer_tokens=6)
    url = gateway({"upstreams": [dying.upstream(), spare.upstream(backup=True)]})
    with httpx.stream(
        "POST",
        url + "/v1/completions",
        json={"model": "m", "prompt": "count: ", "stream": True},
        timeout=20,
    ) as r:
        text, _ = read_stream(r, "completions")
    assert text == full_answer(6)
    assert spare.completions()[0]["body"]["prompt"] == "count: w0 w1 "


def test_stream_that_cannot_be_continued_ends_with_an_error_event(fake, gateway):
    dying = fake("dying", die_after_chunks=2)
    spare = fake("spare")
    url = gateway({"upstreams": [dying.upstream(), spare.upstream(backup=True)]})
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=chat(stream=True, n=2), timeout=20
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    error = json.loads(lines[-2][6:])["error"]
    assert error["code"] == "stream_interrupted" and "n > 1" in error["message"]
    assert lines[-1] == "data: [DONE]"
    assert spare.completions() == []


@pytest.fixture
def processes():
    started = []
    yield started
    for proc in started:
        stop_process(proc)


def test_killing_an_upstream_mid_stream_the_stream_completes(processes, fake, gateway):
    proc, victim_url = spawn_fake("victim", "--token-delay", "0.05", "--answer-tokens", "30")
    processes.append(proc)
    spare = fake("spare", answer_tokens=30)
    url = gateway(
        {"upstreams": [{"name": "victim", "url": victim_url + "/v1"}, spare.upstream(backup=True)]}
    )
    text, chunks = "", 0
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=chat(stream=True), timeout=30
    ) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            assert "error" not in event
            piece = event["choices"][0]["delta"].get("content") or ""
            text += piece
            chunks += bool(piece)
            if chunks == 5:
                proc.send_signal(signal.SIGKILL)
    assert text == full_answer(30)
    assert len(spare.completions()) == 1


def test_killing_an_upstream_under_sustained_load_fails_no_request(processes, gateway):
    victim, victim_url = spawn_fake("victim", "--latency", "0.05", "--token-delay", "0.01")
    survivor, survivor_url = spawn_fake("survivor", "--latency", "0.05", "--token-delay", "0.01")
    processes += [victim, survivor]
    url = gateway(
        {
            "upstreams": [
                {"name": "victim", "url": victim_url + "/v1"},
                {"name": "survivor", "url": survivor_url + "/v1"},
            ]
        }
    )
    failures: list[str] = []
    done = 0

    async def client_loop(client: httpx.AsyncClient, stream: bool, until: float) -> None:
        nonlocal done
        while time.monotonic() < until:
            body = chat(stream=stream)
            try:
                if stream:
                    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                        text = ""
                        async for line in r.aiter_lines():
                            if line.startswith("data: {"):
                                event = json.loads(line[6:])
                                if "error" in event:
                                    failures.append(str(event))
                                for c in event.get("choices", []):
                                    text += c["delta"].get("content") or ""
                        ok = r.status_code == 200 and text == full_answer(8)
                else:
                    r = await client.post(url + "/v1/chat/completions", json=body)
                    ok = r.status_code == 200 and r.json()["choices"][0]["message"][
                        "content"
                    ] == full_answer(8)
                if not ok:
                    failures.append(f"status {r.status_code}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            done += 1

    async def run() -> None:
        until = time.monotonic() + 3.0
        async with httpx.AsyncClient(timeout=30) as client:
            tasks = [asyncio.create_task(client_loop(client, i % 2 == 0, until)) for i in range(8)]
            await asyncio.sleep(1.0)
            victim.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks)

    asyncio.run(run())
    assert failures == []
    assert done > 20
