"""Tool calling over HTTP with the openai SDK: forced calls parse and validate, round trips work.

The tiny model has random weights and a template without tool support (the documented
fallback renders the tools); forced calls are constrained decoding, so their arguments must
validate against the function's schema whatever the weights.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from conftest import SERVED, openai_client_for

pytestmark = pytest.mark.timeout(300)

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 8},
        "unit": {"enum": ["c", "f"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
CLOCK = {
    "type": "object",
    "properties": {"utc_offset": {"type": "integer", "minimum": -12, "maximum": 14}},
    "required": ["utc_offset"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": CLOCK}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": CLOCK}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A tiny model with a 2,048-token context: tool listings are long in its small vocabulary."""
    from tiny_models import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("tools"), "llama", max_position_embeddings=2048)
    with openai_client_for(path, kv_cache_tokens=8192) as client:
        yield client


def ask(client, messages, **kw):
    """Only get_weather by default: the tiny model's context is 512 tokens."""
    kw.setdefault("max_tokens", 100)
    kw.setdefault("tools", TOOLS[:1])
    return client.chat.completions.create(model=SERVED, messages=messages, **kw)


def collect_stream(stream) -> tuple[str, list[dict], str | None]:
    """(content, tool calls, finish_reason) accumulated from streamed chunks."""
    content, calls, finish = "", {}, None
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = call.id or entry["id"]
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


def assert_valid_call(name: str, arguments: str, expected: str | None = None):
    assert name in SCHEMAS and (expected is None or name == expected)
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forced_named_function_arguments_validate(client, seed):
    resp = ask(client, QUESTION, tool_choice=NAMED, temperature=1.0, seed=seed)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert_valid_call(call.function.name, call.function.arguments, "get_weather")


def test_required_calls_one_of_the_tools(client):
    for seed in range(3):
        resp = ask(
            client, QUESTION, tools=TOOLS, tool_choice="required", temperature=1.0, seed=seed
        )
        (call,) = resp.choices[0].message.tool_calls
        assert_valid_call(call.function.name, call.function.arguments)


def test_round_trip_call_then_tool_result_then_answer(client):
    first = ask(client, QUESTION, tool_choice=NAMED, temperature=0)
    message = first.choices[0].message
    call = message.tool_calls[0]
    history = [
        *QUESTION,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"},
    ]
    answer = ask(client, history, max_tokens=8, temperature=0)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.choices[0].message.tool_calls is None
    assert isinstance(answer.choices[0].message.content, str)
    # The call and its result reached the prompt.
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens + 10


def test_round_trip_streaming(client):
    stream = ask(client, QUESTION, tool_choice=NAMED, temperature=1.0, seed=5, stream=True)
    content, calls, finish = collect_stream(stream)
    assert finish == "tool_calls" and content == ""
    (call,) = calls
    assert_valid_call(call["name"], call["arguments"], "get_weather")
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "18 degrees"},
    ]
    stream = ask(client, history, max_tokens=6, temperature=0, stream=True, tool_choice="none")
    content, calls, finish = collect_stream(stream)
    assert calls == [] and finish in ("stop", "length")


def test_auto_with_a_random_model_answers_in_content(client):
    resp = ask(client, QUESTION, max_tokens=6, temperature=0)
    assert resp.choices[0].message.tool_calls is None
    assert resp.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
        ),
        (
            {"response_format": {"type": "json_object"}, "tool_choice": "required"},
            "response_format",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
            "tools.0.function.name",
        ),
    ],
)
def test_bad_tool_requests_are_400s_naming_the_field(client, kw, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=SERVED, messages=QUESTION, max_tokens=4, **{"tools": TOOLS, **kw}
        )
    assert info.value.body["param"] == param


def test_tool_choice_without_tools_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=SERVED, messages=QUESTION, max_tokens=4, tool_choice="required"
        )
    assert info.value.body["param"] == "tool_choice"
