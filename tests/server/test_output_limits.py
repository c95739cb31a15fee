"""A chat request without max_tokens stops at the server's default output limit."""

from __future__ import annotations

import openai
import pytest
from conftest import SERVED, serve

pytestmark = pytest.mark.timeout(120)


def test_chat_without_max_tokens_stops_at_the_default_limit(engine):
    with serve(engine, default_max_tokens=5) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        resp = client.chat.completions.create(
            model=SERVED,
            messages=[{"role": "user", "content": "Tell me a long story."}],
            extra_body={"ignore_eos": True},  # the tiny model must not stop early by itself
        )
        assert resp.usage.completion_tokens == 5
        assert resp.choices[0].finish_reason == "length"
        # An explicit max_tokens above the default is honoured.
        resp = client.chat.completions.create(
            model=SERVED,
            messages=[{"role": "user", "content": "Tell me a long story."}],
            max_tokens=7,
            extra_body={"ignore_eos": True},
        )
        assert resp.usage.completion_tokens == 7


def test_server_config_default_is_4096():
    from localseek.server.config import ServerConfig

    assert ServerConfig().default_max_tokens == 4096
