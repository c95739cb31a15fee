"""The server through the official `openai` SDK over real loopback HTTP, with a tiny model."""

from __future__ import annotations

import openai
import pytest
from conftest import API_KEY, SERVED, serve

from localseek.sampling_params import SamplingParams

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def chat(client, content="Hello, how are you?", **kw):
    kw.setdefault("max_tokens", 8)
    return client.chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": content}], **kw
    )


def test_chat_completion(client):
    resp = chat(client, temperature=0)
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and resp.model == SERVED
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    """The served model offline, as the reference for what the server must answer."""
    from localseek import LLM

    return LLM(
        str(tiny_model_dir),
        dtype="float32",
        device="cpu",
        kv_cache_tokens=1024,
        show_progress=False,
    )


def test_completion_equals_offline_llm_greedy(client, llm):
    """Greedy text through HTTP is the text LLM.generate gives for the same prompts."""
    prompts = ["The quick brown fox", "你好，世界"]
    expected = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=12))
    for prompt, want in zip(prompts, expected, strict=True):
        got = client.completions.create(model=SERVED, prompt=prompt, max_tokens=12, temperature=0)
        assert got.choices[0].text == want.text
        assert got.usage.completion_tokens == len(want.token_ids)
        assert got.usage.prompt_tokens == len(want.prompt_token_ids)


def test_chat_greedy_equals_offline_llm_chat(client, llm):
    messages = [{"role": "user", "content": "Please explain threads."}]
    want = llm.chat([messages], SamplingParams(temperature=0, max_tokens=10))[0]
    got = client.chat.completions.create(
        model=SERVED, messages=messages, max_tokens=10, temperature=0
    )
    assert got.choices[0].message.content == want.text
    assert got.usage.prompt_tokens == len(want.prompt_token_ids)


def test_streaming_matches_non_streaming_and_reports_usage_last(client):
    whole = chat(client, temperature=0, max_tokens=12)
    stream = chat(
        client,
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_streaming(client):
    whole = client.completions.create(model=SERVED, prompt="Hello", max_tokens=10, temperature=0)
    parts = list(
        client.completions.create(
            model=SERVED, prompt="Hello", max_tokens=10, temperature=0, stream=True
        )
    )
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text
    assert parts[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_n_choices_and_seeded_sampling_reproducible(client):
    kw = dict(n=2, temperature=1.0, seed=1234, max_tokens=12)
    first, second = chat(client, **kw), chat(client, **kw)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1]
    assert texts == [c.message.content for c in second.choices]
    assert texts[0] != texts[1]  # choice i runs seed + i
    assert first.usage.completion_tokens == second.usage.completion_tokens > 0


def test_stop_string_cuts_the_text(client):
    full = (
        client.completions.create(model=SERVED, prompt="Once", max_tokens=16, temperature=0)
        .choices[0]
        .text
    )
    start = next(i for i in range(2, len(full) - 2) if "\ufffd" not in full[i : i + 2])
    stop = full[start : start + 2]
    cut = client.completions.create(
        model=SERVED, prompt="Once", max_tokens=16, temperature=0, stop=[stop]
    ).choices[0]
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_logprobs(client):
    resp = chat(client, temperature=0, max_tokens=4, logprobs=True, top_logprobs=3)
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert entry.logprob == pytest.approx(max(t.logprob for t in entry.top_logprobs))


def test_models_and_aliases(client):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == SERVED and {"deepseek-chat", "deepseek-reasoner"} <= set(ids)
    resp = client.chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert resp.model == "deepseek-chat"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert "gpt-9" in info.value.message


def test_prefix_cache_hit_reported_deepseek_style(client):
    system = "You are a helpful assistant. " * 12  # a long shared prefix (several KV blocks)
    usage = []
    for question in ("What is a thread?", "What is a process?"):
        resp = client.chat.completions.create(
            model=SERVED,
            max_tokens=2,
            temperature=0,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        )
        usage.append(resp.usage.model_dump())
    second = usage[1]
    assert second["prompt_cache_hit_tokens"] > 0
    assert (
        second["prompt_cache_hit_tokens"] + second["prompt_cache_miss_tokens"]
        == (second["prompt_tokens"])
    )
    assert second["prompt_tokens_details"]["cached_tokens"] == second["prompt_cache_hit_tokens"]


def test_prefix_true_continues_the_assistant_message(server, client):
    """DeepSeek's chat prefix completion, under both the /beta and the plain base URL."""
    messages = [
        {"role": "user", "content": "Write code"},
        {"role": "assistant", "content": "def add(a, b):", "prefix": True},
    ]
    beta = openai.OpenAI(base_url=server.url + "/beta", api_key="x", max_retries=0)
    got = beta.chat.completions.create(
        model="deepseek-chat", messages=messages, max_tokens=8, temperature=0
    )
    # The continuation is what the model writes after the raw, unclosed assistant text.
    raw = client.completions.create(
        model=SERVED,
        prompt=[_rendered_prefix_ids(server, messages)],
        max_tokens=8,
        temperature=0,
    )
    assert got.choices[0].message.content == raw.choices[0].text
    plain = client.chat.completions.create(
        model=SERVED, messages=messages, max_tokens=8, temperature=0
    )
    assert plain.choices[0].message.content == got.choices[0].message.content
    # vLLM's spelling, which the gateway uses to continue a stream cut mid-answer.
    vllm_style = client.chat.completions.create(
        model=SERVED,
        messages=[{k: v for k, v in m.items() if k != "prefix"} for m in messages],
        max_tokens=8,
        temperature=0,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    assert vllm_style.choices[0].message.content == got.choices[0].message.content


def _rendered_prefix_ids(server, messages):
    tokenizer = server.app.state.server.engine.tokenizer
    text = tokenizer.apply_chat_template(
        [{k: v for k, v in m.items() if k != "prefix"} for m in messages],
        continue_final_message=True,
    )
    assert text.endswith("def add(a, b):")
    return tokenizer.encode(text, add_special_tokens=False)


def test_api_key_required(engine):
    with serve(engine, api_key=API_KEY) as live:
        anonymous = openai.OpenAI(base_url=live.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            anonymous.models.list()
        keyed = openai.OpenAI(base_url=live.url + "/v1", api_key=API_KEY, max_retries=0)
        assert keyed.models.list().data[0].id == SERVED


def test_reasoning_content_split_for_a_think_template(r1_model_dir):
    from conftest import engine_config

    from localseek.engine.async_engine import AsyncEngine
    from localseek.server.reasoning import split_reasoning

    eng = AsyncEngine.from_config(engine_config(r1_model_dir, max_num_seqs=2))
    try:
        with serve(eng) as live:
            client = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0)
            messages = [{"role": "user", "content": "What is 2+2?"}]
            resp = client.chat.completions.create(
                model="deepseek-reasoner", messages=messages, max_tokens=24, temperature=0
            )
            tokenizer = eng.tokenizer
            prompt = tokenizer.apply_chat_template(messages)
            assert prompt.endswith("<think>\n")  # the template opened the block
            raw = (
                client.completions.create(
                    model=SERVED,
                    prompt=[tokenizer.encode(prompt, add_special_tokens=False)],
                    max_tokens=24,
                    temperature=0,
                )
                .choices[0]
                .text
            )
            reasoning, content = split_reasoning(raw, start_in_reasoning=True)
            message = resp.choices[0].message.model_dump()
            assert message["reasoning_content"] == (reasoning or None)
            assert message["content"] == content
            assert reasoning  # the output started inside the think block
            streamed = list(
                client.chat.completions.create(
                    model="deepseek-reasoner",
                    messages=messages,
                    max_tokens=24,
                    temperature=0,
                    stream=True,
                )
            )
            deltas = [c.choices[0].delta.model_dump() for c in streamed if c.choices]
            assert "".join(d.get("reasoning_content") or "" for d in deltas) == reasoning
            assert "".join(d.get("content") or "" for d in deltas) == content
    finally:
        eng.shutdown()
