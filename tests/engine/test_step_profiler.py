"""`serve --profile N`: N engine steps recorded by the PyTorch profiler into a trace that
Perfetto/TensorBoard read, the top operators printed, and serving going on afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_stack import free_port
from tiny_models import make_tiny_model

from localseek.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from localseek.engine.async_engine import AsyncEngine
from localseek.engine.step_profiler import ProfileConfig, StepProfiler
from localseek.errors import ConfigError
from localseek.sampling_params import SamplingParams

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("profile-model"), "llama")


def generate(engine: AsyncEngine, request_id: str, max_tokens: int) -> list[int]:
    async def run() -> list[int]:
        params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
        last = None
        async for out in engine.generate("hello there", params, request_id=request_id):
            last = out
        return list(last.token_ids)

    return asyncio.run(run())


def test_profiles_n_steps_then_serves_on(model_dir, tmp_path):
    config = EngineConfig(
        model=ModelConfig(model=str(model_dir), dtype="float32", device="cpu"),
        cache=CacheConfig(block_size=16, kv_cache_tokens=1024),
        scheduler=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=256),
        show_progress=False,
    )
    reports: list[str] = []
    profiler = StepProfiler(ProfileConfig(3, str(tmp_path)), report=reports.append)
    engine = AsyncEngine.from_config(config, profiler=profiler)
    try:
        assert len(generate(engine, "a", 6)) == 6
        assert profiler.done and len(reports) == 1
        trace = profiler.trace_path
        assert trace is not None and trace.parent == tmp_path
        assert trace.name.endswith(".pt.trace.json")  # the name TensorBoard's plugin looks for
        events = json.loads(trace.read_text())["traceEvents"]
        names = {e.get("name", "") for e in events}
        assert any(n.startswith("aten::") for n in names)
        assert "aten::" in profiler.table and "Self CPU" in profiler.table
        assert str(trace) in reports[0]
        assert len(generate(engine, "b", 4)) == 4  # later steps run unprofiled
        assert len(list(tmp_path.iterdir())) == 1
    finally:
        engine.shutdown()


def test_profile_steps_must_be_positive():
    with pytest.raises(ConfigError, match="--profile"):
        ProfileConfig(0)


def test_serve_profile_flag_end_to_end(model_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [
        sys.executable,
        "-m",
        "localseek",
        "serve",
        str(model_dir),
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--profile",
        "2",
        "--profile-dir",
        str(tmp_path / "traces"),
    ]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        body = {"prompt": "hi", "max_tokens": 4, "ignore_eos": True}
        assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 200
        traces = list((tmp_path / "traces").glob("*.pt.trace.json"))
        assert len(traces) == 1
        while "profile of 2 engine steps" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "aten::" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
