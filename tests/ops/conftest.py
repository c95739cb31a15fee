"""Fixtures for ops tests: one tiny-model server and gateway, with a little traffic, per module."""

from __future__ import annotations

import openai
import pytest
from live_stack import SERVED, live_stack
from tiny_models import make_tiny_model


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    model = make_tiny_model(tmp_path_factory.mktemp("ops-model"), "llama")
    with live_stack(model) as live:
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
