"""Usage in streams: one final chunk (include_usage), or the usage so far in every chunk."""

from __future__ import annotations

import openai
import pytest
from conftest import SERVED

pytestmark = pytest.mark.timeout(120)

N = 24
CONTINUOUS = {"include_usage": True, "continuous_usage_stats": True}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _chat_chunks(client, stream_options):
    return list(
        client.chat.completions.create(
            model=SERVED,
            messages=[{"role": "user", "content": "Count in Chinese: 一二三"}],
            max_tokens=N,
            temperature=0,
            stream=True,
            stream_options=stream_options,
            extra_body={"ignore_eos": True},
        )
    )


def _assert_usage_grows_to_the_final(chunks) -> None:
    final = chunks[-1]
    assert final.choices == [] and final.usage.completion_tokens == N
    body = chunks[:-1]
    assert all(c.usage is not None for c in body), "a chunk without the usage so far"
    assert {c.usage.prompt_tokens for c in body} == {final.usage.prompt_tokens}
    assert all(
        c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens for c in body
    )
    so_far = [c.usage.completion_tokens for c in body]
    assert so_far == sorted(so_far) and so_far[-1] == final.usage.completion_tokens
    # Every chunk with text brings at least one new token: the count grows with the text.
    with_text = [c.usage.completion_tokens for c in body if _text(c)]
    assert len(set(with_text)) == len(with_text) and with_text[0] >= 1


def _text(chunk) -> str:
    choice = chunk.choices[0] if chunk.choices else None
    if choice is None:
        return ""
    return (choice.delta.content if hasattr(choice, "delta") else choice.text) or ""


def test_chat_stream_carries_the_usage_so_far_in_every_chunk(client):
    chunks = _chat_chunks(client, CONTINUOUS)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].usage.completion_tokens == 0
    _assert_usage_grows_to_the_final(chunks)


def test_completion_stream_carries_the_usage_so_far_in_every_chunk(client):
    chunks = list(
        client.completions.create(
            model=SERVED,
            prompt="Once upon a time",
            max_tokens=N,
            temperature=0,
            stream=True,
            stream_options=CONTINUOUS,
            extra_body={"ignore_eos": True},
        )
    )
    _assert_usage_grows_to_the_final(chunks)


def test_include_usage_alone_sends_usage_only_at_the_end(client):
    chunks = _chat_chunks(client, {"include_usage": True})
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].usage.completion_tokens == N
    # continuous_usage_stats means nothing without include_usage (as in vLLM).
    chunks = _chat_chunks(client, {"continuous_usage_stats": True})
    assert all(c.usage is None for c in chunks)
