"""One concurrency level against an OpenAI-style server: all prompts at once, streamed, timed."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from sse_client import stream_events


@dataclass(frozen=True)
class LevelRun:
    """What one level's requests produced: output tokens, wall time, each request's TTFT."""

    tokens: int
    seconds: float
    ttfts: tuple[float, ...]
    tokens_per_request: tuple[int, ...]

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def ttft_p50(self) -> float:
        return statistics.median(self.ttfts) if self.ttfts else 0.0


async def stream_level(
    base: str, prompts: list[list[int]], out_len: int, temperature: float = 0.0
) -> LevelRun:
    """All prompts at once as streaming /v1/completions; TTFT is the first chunk with a token.

    Greedy unless `temperature` is given (then each server samples with its own defaults for
    everything else, as a client sending only a temperature gets), `ignore_eos` (both
    localseek and llama-server accept it on /v1/completions), so every request asks for
    exactly `out_len` tokens. The client is sse_client.py's, not httpx:
    on a 2-core machine the load generator's own CPU comes out of the server's share, and
    httpx's was ~6% of the machine at 16 streams."""
    body = {
        "max_tokens": out_len,
        "temperature": temperature,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()

    async def one(prompt: list[int]) -> tuple[float, int]:
        first, chunks, usage = None, 0, None
        async for event in stream_events(f"{base}/v1/completions", {**body, "prompt": prompt}):
            usage = event.get("usage") or usage
            if event.get("choices"):
                first = first or time.perf_counter() - start
                chunks += 1
        # The usage's completion_tokens when given; one token per chunk otherwise.
        return first or 0.0, (usage or {}).get("completion_tokens") or chunks

    done = await asyncio.gather(*(one(p) for p in prompts))
    seconds = time.perf_counter() - start
    return LevelRun(
        tokens=sum(t for _, t in done),
        seconds=seconds,
        ttfts=tuple(f for f, _ in done),
        tokens_per_request=tuple(t for _, t in done),
    )


def run_level(
    base: str, prompts: list[list[int]], out_len: int, temperature: float = 0.0
) -> LevelRun:
    """`stream_level` from synchronous code (a fresh event loop per level)."""
    return asyncio.run(stream_level(base, prompts, out_len, temperature))
