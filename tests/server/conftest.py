"""Server test fixtures: tiny models, a real AsyncEngine, and the app on a loopback port."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from live_server import LiveServer  # noqa: E402

API_KEY = "test-key"
SERVED = "tiny-llama"


def engine_config(model_dir: Path, *, max_num_seqs: int = 8, kv_cache_tokens: int = 4096):
    from localseek.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig

    return EngineConfig(
        model=ModelConfig(model=str(model_dir), dtype="float32", device="cpu"),
        cache=CacheConfig(block_size=16, kv_cache_tokens=kv_cache_tokens),
        scheduler=SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=512),
        show_progress=False,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("server-model"), "llama")


@pytest.fixture(scope="session")
def r1_model_dir(tmp_path_factory) -> Path:
    """The same kind of tiny model, with DeepSeek-R1's habit: the template opens <think>."""
    from tiny_models import make_tiny_model
    from tiny_tokenizer import R1_TEMPLATE, save_tiny_tokenizer

    path = make_tiny_model(tmp_path_factory.mktemp("server-r1"), "llama", seed=1)
    save_tiny_tokenizer(path, chat_template=R1_TEMPLATE)
    return path


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from localseek.engine.async_engine import AsyncEngine

    eng = AsyncEngine.from_config(engine_config(tiny_model_dir))
    yield eng
    eng.shutdown()


def serve(engine, **config):
    """LiveServer over a new app for `engine` (each app has its own admission and metrics)."""
    from localseek.server.app import build_app
    from localseek.server.config import ServerConfig

    config.setdefault("served_model_name", SERVED)
    return LiveServer(build_app(engine, ServerConfig(**config)))


@contextlib.contextmanager
def openai_client_for(model_dir: Path, *, base: str = "/v1", kv_cache_tokens: int = 4096):
    """An `openai.OpenAI` client of a new engine over `model_dir`, served on loopback."""
    import openai

    from localseek.engine.async_engine import AsyncEngine

    eng = AsyncEngine.from_config(engine_config(model_dir, kv_cache_tokens=kv_cache_tokens))
    try:
        with serve(eng) as live:
            yield openai.OpenAI(base_url=live.url + base, api_key="unused", max_retries=0)
    finally:
        eng.shutdown()


@pytest.fixture(scope="module")
def server(engine):
    with serve(engine) as live:
        yield live


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Poll until `predicate()` is true (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def pool_is_whole(engine) -> bool:
    """No request left in the engine and every KV block allocatable again."""
    inner = engine.engine
    bm = inner.block_manager
    return (
        not inner.has_unfinished()
        and bm.num_free_blocks() == bm.num_total_blocks
        and engine.stats().num_running == 0
    )
