"""run_server: `localseek serve` — load the engine, serve the app on uvicorn, shut down cleanly.

The HTTP port opens at once and answers /health with 503 while the model loads (so an
orchestrator sees a live but not-ready process); the engine is attached when it is ready.
The first SIGTERM drains (see drain.py): admitted requests finish, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from localseek.config import EngineConfig
from localseek.server.allocator import keep_freed_memory, use_one_arena
from localseek.server.app import build_app
from localseek.server.config import ServerConfig
from localseek.server.drain import DrainingServer
from localseek.server.threads import threads_leave_cores_idle

if TYPE_CHECKING:
    from localseek.engine.step_profiler import ProfileConfig

logger = logging.getLogger(__name__)

_GIL_SWITCH_INTERVAL_S = 0.0005
_FINAL_WRITE_S = 5


def run_server(
    engine_config: EngineConfig | None,
    server_config: ServerConfig,
    profile: ProfileConfig | None = None,
) -> None:
    """Serve until interrupted or drained (SIGTERM, see drain.py); raises the load error if the
    model cannot be loaded.

    `engine_config` None serves only the embedding model (`--embedding-only`). With `profile`,
    the first `profile.steps` engine steps are recorded (step_profiler.py)."""
    # First, before any thread exists; with keep_freed_memory() after the load, every step's
    # large buffers are reused instead of mmapped and faulted in again (see allocator.py; 64
    # concurrent streams on 2 cores: 150.7 -> 168.3 tokens/s, median of 3 interleaved runs).
    use_one_arena()
    if engine_config is not None:
        _leave_a_core_for_http(engine_config)
    # The engine thread releases the GIL around every torch op and must get it back quickly;
    # with the default 5 ms switch interval a busy event loop (say, refusing a burst) makes it
    # wait up to 5 ms per op. Process-wide, so set here at the edge, not in the engine.
    sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)
    app = build_app(None, server_config)
    state = app.state.server
    server = DrainingServer(
        uvicorn.Config(
            app,
            host=server_config.host,
            port=server_config.port,
            log_level=server_config.log_level,
            # After the drain: time to finish writing the last responses.
            timeout_graceful_shutdown=_FINAL_WRITE_S,
        ),
        state.drain,
        state.in_flight,
        server_config.drain_timeout_s,
    )
    failures: list[BaseException] = []
    app.router.lifespan_context = _lifespan(engine_config, server, failures, profile)
    server.run()
    if failures:
        raise failures[0]


def _leave_a_core_for_http(engine_config: EngineConfig) -> None:
    """Keep torch's CPU threads from starving the event loop that parses requests and writes tokens.

    With a bounded spin or a passive wait (see server/threads.py; the CLI sets the spin) idle
    threads give their cores back and the engine keeps every core. Otherwise, e.g. a user's
    OMP_WAIT_POLICY=ACTIVE, give torch one core fewer.
    """
    import torch

    device = engine_config.model.device
    on_cpu = device.startswith("cpu") or (device == "auto" and not torch.cuda.is_available())
    if on_cpu and "OMP_NUM_THREADS" not in os.environ and not threads_leave_cores_idle():
        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores - 1))


def _lifespan(
    engine_config: EngineConfig | None,
    server: uvicorn.Server,
    failures: list,
    profile: ProfileConfig | None = None,
):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        state = app.state.server
        holder: list = []

        def load() -> None:
            # A daemon thread, not the default executor: Ctrl-C while loading must not wait.
            from localseek.engine.async_engine import AsyncEngine
            from localseek.engine.embedder import Embedder

            try:
                if state.config.embedding_model is not None:
                    embedder = Embedder(state.config.embedding_model)
                    loop.call_soon_threadsafe(setattr, state, "embedder", embedder)
                if engine_config is None:
                    return
                profiler = None
                if profile is not None:
                    from localseek.engine.step_profiler import StepProfiler

                    profiler = StepProfiler(profile)
                engine = AsyncEngine.from_config(engine_config, profiler=profiler)
            except Exception as exc:  # reported by run_server after uvicorn stops
                failures.append(exc)
                server.should_exit = True
                return
            keep_freed_memory()  # not before: the loader's temporaries would stay resident
            holder.append(engine)
            loop.call_soon_threadsafe(_attach, state, engine)

        threading.Thread(target=load, name="localseek-model-load", daemon=True).start()
        try:
            yield
        finally:
            for engine in holder:
                engine.shutdown()

    return lifespan


def _attach(state, engine) -> None:
    state.attach(engine)
    logger.info(
        "model %s ready: serving as %r (max_model_len=%d)",
        engine.model_name,
        state.served_model,
        engine.max_model_len,
    )
