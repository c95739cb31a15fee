"""AsyncEngine: streams per request from an engine thread; leaving a stream aborts it."""

from __future__ import annotations

import asyncio

import pytest
from tiny_models import make_tiny_model

from localseek import LLM, SamplingParams
from localseek.config import CacheConfig, EngineConfig, ModelConfig
from localseek.engine.async_engine import AsyncEngine
from localseek.engine.engine import Engine
from localseek.errors import ContextLengthError

GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="module")
def engine(model_dir):
    config = EngineConfig(
        model=ModelConfig(model=str(model_dir), dtype="float32", device="cpu", max_model_len=256),
        cache=CacheConfig(block_size=4),
        show_progress=False,
    )
    engine = AsyncEngine.from_config(config)
    yield engine
    engine.shutdown()


def pool_whole(engine: AsyncEngine) -> bool:
    bm = engine.engine.block_manager
    return bm.num_free_blocks() == bm.num_total_blocks


async def collect(engine, prompt, params, request_id):
    outs = []
    async for out in engine.generate(prompt, params, request_id=request_id):
        outs.append(out)
    return outs


async def test_a_burst_that_wakes_the_engine_is_prefilled_in_one_step(model_dir):
    # Requests 20 ms apart, a quiet window of 200 ms: the first step sees all four. With no
    # window the engine starts on the first request alone (the tiny model's step takes ~ms).
    config = EngineConfig(
        model=ModelConfig(model=str(model_dir), dtype="float32", device="cpu", max_model_len=256),
        cache=CacheConfig(block_size=4),
        show_progress=False,
    )
    engine = AsyncEngine(Engine(config), burst_quiet_s=0.2, burst_max_s=5.0)
    steps: list[set[str]] = []
    step = engine.engine.step

    def recording_step():
        steps.append(set(engine.engine.unfinished_request_ids()))
        return step()

    engine.engine.step = recording_step

    async def arriving(i: int):
        await asyncio.sleep(0.02 * i)
        return await collect(engine, [3, 4, 5 + i], GREEDY, f"b{i}")

    try:
        await asyncio.gather(*(arriving(i) for i in range(4)))
    finally:
        engine.shutdown()
    assert steps[0] == {"b0", "b1", "b2", "b3"}


async def test_concurrent_streams_match_offline_generation(engine, model_dir):
    prompts = [[1, 2, 3, 4, 5], list(range(20, 50)), [9] * 12]
    results = await asyncio.gather(
        *(collect(engine, p, GREEDY, f"r{i}") for i, p in enumerate(prompts))
    )
    offline = LLM(str(model_dir), dtype="float32", device="cpu", show_progress=False)
    expected = offline.generate(prompts, GREEDY)
    for outs, exp in zip(results, expected):
        assert outs[-1].finished and outs[-1].finish_reason == "length"
        streamed = [t for o in outs for t in o.delta_token_ids]
        assert streamed == exp.token_ids == outs[-1].token_ids
        assert "".join(o.delta_text for o in outs) == outs[-1].text
    assert engine.is_alive()


async def test_leaving_a_stream_aborts_and_frees_blocks(engine):
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    stream = engine.generate(list(range(1, 40)), params, request_id="leaver")
    async for _ in stream:
        break
    await stream.aclose()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if pool_whole(engine) and not engine.engine.has_unfinished():
            break
    assert pool_whole(engine)
    assert not engine.engine.has_unfinished()


async def test_bad_request_raises_before_streaming_and_engine_survives(engine):
    with pytest.raises(ContextLengthError):
        await collect(engine, [1] * 300, GREEDY, "too-long")
    outs = await collect(engine, [1, 2, 3], GREEDY, "after")
    assert len(outs[-1].token_ids) == 10
    assert engine.is_alive()
