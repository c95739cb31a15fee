"""Sends a golden set's prompts to one OpenAI-compatible endpoint and collects the answers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from localseek.errors import ConfigError
from localseek.ops.eval.golden import GoldenItem


@dataclass(frozen=True)
class Endpoint:
    """Where to send the prompts: a base URL ending in /v1 (like the OpenAI SDK's base_url)."""

    label: str  # baseline | candidate
    base_url: str
    model: str | None = None  # None: the first id GET /models lists
    api_key: str | None = None


@dataclass(frozen=True)
class Answers:
    endpoint: Endpoint
    model: str
    texts: tuple[str | None, ...]  # None where the request failed
    errors: tuple[str, ...]
    seconds: float


def collect(
    endpoint: Endpoint,
    items: Sequence[GoldenItem],
    *,
    concurrency: int = 4,
    timeout_s: float = 300.0,
    seed: int = 0,
) -> Answers:
    """Greedy answers (temperature 0, fixed seed) to every item, `concurrency` at a time."""
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    base = endpoint.base_url.rstrip("/")
    with httpx.Client(base_url=base, headers=headers, timeout=timeout_s) as client:
        model = endpoint.model or _first_model(client, endpoint)
        started = time.monotonic()

        def ask(item: GoldenItem) -> tuple[str | None, str | None]:
            body = {
                "model": model,
                "messages": list(item.messages),
                "max_tokens": item.max_tokens,
                "temperature": 0,
                "seed": seed,
            }
            try:
                r = client.post("/chat/completions", json=body)
            except httpx.HTTPError as exc:
                return None, f"{item.id}: {type(exc).__name__}: {exc}"
            if r.status_code != 200:
                return None, f"{item.id}: HTTP {r.status_code}: {r.text[:200]}"
            return r.json()["choices"][0]["message"].get("content") or "", None

        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            results = list(pool.map(ask, items))
    texts = tuple(t for t, _ in results)
    errors = tuple(e for _, e in results if e)
    if all(t is None for t in texts):
        raise ConfigError(
            f"{endpoint.label} ({base}) answered none of the {len(items)} prompts; "
            f"first error: {errors[0]}"
        )
    return Answers(endpoint, model, texts, errors, time.monotonic() - started)


def _first_model(client: httpx.Client, endpoint: Endpoint) -> str:
    try:
        r = client.get("/models")
        r.raise_for_status()
        return r.json()["data"][0]["id"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        raise ConfigError(
            f"{endpoint.label}: cannot list models at {endpoint.base_url}/models ({exc}); "
            "pass the model id"
        ) from exc
