"""A tiny-model `localseek serve` app and a gateway in front of it, both on loopback threads.

For tests that need the real server and gateway together in one process (dashboards, the web
page, the usage ledger): each app runs under its own uvicorn thread with its lifespan on.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

SERVED = "tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve `app` on a free loopback port until the block ends; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def tiny_engine(model_dir: Path):
    """A real AsyncEngine over a tiny random checkpoint (caller shuts it down)."""
    from localseek.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
    from localseek.engine.async_engine import AsyncEngine

    config = EngineConfig(
        model=ModelConfig(model=str(model_dir), dtype="float32", device="cpu"),
        cache=CacheConfig(block_size=16, kv_cache_tokens=4096),
        scheduler=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=512),
        show_progress=False,
    )
    return AsyncEngine.from_config(config)


@dataclass
class Stack:
    server_url: str
    gateway_url: str
    ledger: Path | None = None  # the gateway's usage ledger, when it keeps one


@contextmanager
def live_stack(model_dir: Path, gateway_extra: dict[str, Any] | None = None) -> Iterator[Stack]:
    """The tiny model served by `localseek serve`'s app, and a gateway whose one local upstream
    is that server (plus whatever `gateway_extra` adds to the gateway config)."""
    from localseek.gateway.app import create_app
    from localseek.gateway.config import parse_gateway_config
    from localseek.server.app import build_app
    from localseek.server.config import ServerConfig

    engine = tiny_engine(model_dir)
    with ExitStack() as stack:
        stack.callback(engine.shutdown)
        server = stack.enter_context(
            serving(build_app(engine, ServerConfig(served_model_name=SERVED)))
        )
        extra = dict(gateway_extra or {})
        upstreams = [{"name": "replica-1", "url": server + "/v1", "models": [SERVED]}]
        config = {
            "upstreams": upstreams + list(extra.pop("upstreams", [])),
            "health": {"interval_s": 0.2, "probe_timeout_s": 1.0},
            **extra,
        }
        gateway = stack.enter_context(serving(create_app(parse_gateway_config(config))))
        ledger = config.get("usage", {}).get("path")
        yield Stack(server, gateway, Path(ledger) if ledger else None)


# The shared stack's gateway also knows a cloud upstream (never reached: the local replica has
# free slots) whose prices value the tokens served locally.
CLOUD_PRICES = {"price_input_per_mtok": 1.0, "price_output_per_mtok": 2.0}


def shared_stack(tmp: Path) -> Iterator[Stack]:
    """The session's stack (tests/conftest.py): a ledger, a priced cloud, some traffic."""
    import openai
    from tiny_models import make_tiny_model

    cloud = {
        "name": "cloud",
        "url": f"http://127.0.0.1:{free_port()}/v1",
        "kind": "cloud",
        "models": [SERVED],
        "probe": False,
        **CLOUD_PRICES,
    }
    extra = {"upstreams": [cloud], "usage": {"path": str(tmp / "usage.db")}}
    with live_stack(make_tiny_model(tmp, "llama"), extra) as live:
        for base in (live.server_url, live.gateway_url):
            client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
            client.chat.completions.create(
                model=SERVED, messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            stream = client.chat.completions.create(
                model=SERVED,
                messages=[{"role": "user", "content": "hello"}],
                max_tokens=4,
                stream=True,
            )
            assert list(stream)
        yield live


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
}


def exported_names(metrics_url: str) -> set[str]:
    """Every sample name a /metrics page can produce, from its families (with or without samples)."""
    names = set()
    for family in text_string_to_metric_families(httpx.get(metrics_url).text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(s.name for s in family.samples)
    return names
