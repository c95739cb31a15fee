"""Nothing silently ignored: each OpenAI request field is implemented, refused or documented."""

from __future__ import annotations

import re
from pathlib import Path

import openai
import pytest
from conftest import SERVED
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import completion_create_params as chat_create_params

from localseek.errors import InvalidRequestError
from localseek.server.api_fields import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    EMBEDDING_FIELDS,
    FieldPolicy,
)
from localseek.server.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from localseek.server.thinking import thinking_template_kwargs

pytestmark = pytest.mark.timeout(120)

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
MESSAGES = [{"role": "user", "content": "hi"}]

ENDPOINTS = [
    (
        "chat",
        ChatCompletionRequest,
        CHAT_FIELDS,
        [
            chat_create_params.CompletionCreateParamsStreaming,
            chat_create_params.CompletionCreateParamsNonStreaming,
        ],
    ),
    (
        "completions",
        CompletionRequest,
        COMPLETION_FIELDS,
        [
            completion_create_params.CompletionCreateParamsStreaming,
            completion_create_params.CompletionCreateParamsNonStreaming,
        ],
    ),
    (
        "embeddings",
        EmbeddingRequest,
        EMBEDDING_FIELDS,
        [embedding_create_params.EmbeddingCreateParams],
    ),
]


def sdk_fields(param_types) -> set[str]:
    """Every key of the SDK's request TypedDicts (their bases' included)."""
    names: set[str] = set()
    for typed_dict in param_types:
        for klass in typed_dict.__mro__:
            names |= set(getattr(klass, "__annotations__", {}))
    return names


def documented_ignored(endpoint: str) -> set[str]:
    """Field names in docs/api.md's "accepted and ignored" table for `endpoint`."""
    text = API_DOC.read_text(encoding="utf-8")
    section = text.split(f"<!-- ignored:{endpoint} -->", 1)[1].split("<!-- /ignored -->", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))


@pytest.mark.parametrize(("name", "model", "policy", "param_types"), ENDPOINTS)
def test_every_sdk_field_is_in_exactly_one_set(name, model, policy: FieldPolicy, param_types):
    fields = sdk_fields(param_types)
    assert len(fields) >= 5  # the walk found the SDK's fields
    implemented = set(model.model_fields)
    for field in sorted(fields):
        homes = [
            label
            for label, members in (
                ("implemented", implemented),
                ("refused", set(policy.refused)),
                ("ignored", set(policy.ignored)),
            )
            if field in members
        ]
        assert len(homes) == 1, f"{name}: {field!r} is in {homes or 'no set'}"


@pytest.mark.parametrize(("name", "model", "policy", "param_types"), ENDPOINTS)
def test_ignored_fields_are_exactly_the_documented_ones(name, model, policy, param_types):
    assert documented_ignored(name) == set(policy.ignored)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def chat(client, **extra):
    return client.chat.completions.create(
        model=SERVED, messages=MESSAGES, max_tokens=2, extra_body=extra
    )


def complete(client, **extra):
    return client.completions.create(model=SERVED, prompt="hi", max_tokens=2, extra_body=extra)


@pytest.mark.parametrize("call", [chat, complete])
def test_unknown_fields_are_refused_by_name(client, call):
    with pytest.raises(openai.BadRequestError) as info:
        call(client, temprature=0.5, frobnicate=True)
    error = info.value.body
    assert error["param"] == "frobnicate"
    assert "'frobnicate'" in error["message"] and "'temprature'" in error["message"]


@pytest.mark.parametrize(("call", "policy"), [(chat, CHAT_FIELDS), (complete, COMPLETION_FIELDS)])
def test_each_refused_field_is_a_400_naming_it(client, call, policy):
    for field, refused in policy.refused.items():
        with pytest.raises(openai.BadRequestError) as info:
            call(client, **{field: {"probe": 1}})
        assert info.value.body["param"] == field
        assert field in info.value.body["message"] and refused.reason in info.value.body["message"]


def test_refused_fields_pass_with_their_default_values(client):
    resp = chat(client, modalities=["text"], response_format={"type": "text"}, tool_choice="none")
    assert resp.choices[0].message.content is not None
    assert complete(client, best_of=1).choices


@pytest.mark.parametrize(("call", "policy"), [(chat, CHAT_FIELDS), (complete, COMPLETION_FIELDS)])
def test_ignored_fields_are_accepted(client, call, policy):
    values = {"store": True, "metadata": {"team": "a"}, "service_tier": "auto"}
    resp = call(client, **{f: values.get(f, "x") for f in policy.ignored})
    assert resp.usage.completion_tokens >= 1


def test_nested_unknown_keys_are_refused(client):
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, stream_options={"include_usage": True, "inclde_usage": True})
    assert info.value.body["param"] == "stream_options.inclde_usage"


def test_thinking_without_a_switch_is_refused_unless_it_matches(client):
    # The tiny model's template never reasons: "disabled" is what it does anyway.
    assert chat(client, thinking={"type": "disabled"}).choices
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, thinking={"type": "enabled"})
    assert info.value.body["param"] == "thinking"
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, thinking={"type": "sometimes"})
    assert info.value.body["param"].startswith("thinking")


def test_thinking_maps_to_the_templates_own_switch():
    qwen3 = "{% if enable_thinking is defined and not enable_thinking %}/no_think{% endif %}"
    assert thinking_template_kwargs(False, qwen3) == {"enable_thinking": False}
    v31 = "{% if thinking %}<think>{% else %}</think>{% endif %}"
    assert thinking_template_kwargs(True, v31) == {"thinking": True}
    r1 = "{{ '<|Assistant|><think>\\n' }}"
    assert thinking_template_kwargs(True, r1) == {}
    with pytest.raises(InvalidRequestError, match="always reasons"):
        thinking_template_kwargs(False, r1)
