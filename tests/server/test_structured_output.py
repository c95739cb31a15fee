"""response_format over HTTP with the openai SDK: a random-weight model's output is valid JSON.

The tiny model has random weights, so only the token mask can make its output parse: each
answer is parsed and validated against its schema with `jsonschema`.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from conftest import SERVED

pytestmark = pytest.mark.timeout(300)

S = {"type": "string", "maxLength": 8}  # bounded: a random model rarely closes a string itself


def obj(properties: dict, required: list | None = None) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


SCHEMAS = {
    "string": obj({"name": S}),
    "integer": obj({"age": {"type": "integer", "minimum": 0, "maximum": 150}}),
    "number": obj({"x": {"type": "number", "minimum": -10, "maximum": 10}}),
    "boolean": obj({"ok": {"type": "boolean"}}),
    "null": obj({"nothing": {"type": "null"}}),
    "enum": obj({"color": {"enum": ["red", "green", "blue"]}}),
    "const": obj({"version": {"const": 2}}),
    "two fields": obj({"name": S, "admin": {"type": "boolean"}}),
    "optional field": obj({"name": S, "nick": S}, required=["name"]),
    "nested": obj({"user": obj({"id": {"type": "integer", "maximum": 999}, "name": S})}),
    "array of ints": obj(
        {"ids": {"type": "array", "items": {"type": "integer", "maximum": 99}, "maxItems": 3}}
    ),
    "array bounds": obj(
        {"tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 2}}
    ),
    "array of objects": obj(
        {"points": {"type": "array", "items": obj({"x": {"type": "boolean"}}), "maxItems": 2}}
    ),
    "anyOf": obj({"v": {"anyOf": [{"type": "integer", "maximum": 9}, {"type": "boolean"}]}}),
    "nullable": obj({"v": {"type": ["boolean", "null"]}}),
    "pattern": obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}}),
    "string lengths": obj({"pin": {"type": "string", "minLength": 4, "maxLength": 4}}),
    "exclusive range": obj(
        {"n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5}}
    ),
    "ref": {
        "$defs": {"item": obj({"done": {"type": "boolean"}})},
        **obj({"first": {"$ref": "#/$defs/item"}, "second": {"$ref": "#/$defs/item"}}),
    },
    "top-level array": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
    "top-level enum": {"enum": ["yes", "no", 3]},
    "deep nesting": obj({"a": obj({"b": obj({"c": {"type": "integer", "maximum": 9}})})}),
    "many fields": obj({f"f{i}": {"type": "boolean"} for i in range(6)}),
}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def ask(client, response_format: dict, **kw):
    kw.setdefault("max_tokens", 200)
    return client.chat.completions.create(
        model=SERVED,
        messages=[{"role": "user", "content": "Answer in JSON."}],
        response_format=response_format,
        **kw,
    )


def json_schema_format(name: str, schema: dict) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {"name": name.replace(" ", "_"), "schema": schema, "strict": True},
    }


def test_at_least_twenty_schemas():
    assert len(SCHEMAS) >= 20


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_output_validates_against_the_schema(client, name):
    schema = SCHEMAS[name]
    for temperature, seed in ((0.0, None), (1.0, 7)):
        resp = ask(client, json_schema_format(name, schema), temperature=temperature, seed=seed)
        choice = resp.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_streamed_output_validates_too(client):
    schema = SCHEMAS["nested"]
    stream = ask(client, json_schema_format("nested", schema), temperature=1.0, seed=3, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), schema)


def test_json_object_mode_gives_an_object(client):
    for seed in range(3):
        resp = ask(client, {"type": "json_object"}, temperature=1.0, seed=seed, max_tokens=400)
        choice = resp.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        assert isinstance(json.loads(choice.message.content), dict)


def test_unconstrained_neighbours_are_unaffected(client):
    """n choices, one request: the constraint is per request; a plain request beside it is
    the same text as alone."""
    plain = dict(
        model=SERVED,
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=12,
        temperature=0,
    )
    alone = client.chat.completions.create(**plain).choices[0].message.content
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(4) as pool:
        constrained = [
            pool.submit(ask, client, json_schema_format("s", SCHEMAS["many fields"]))
            for _ in range(3)
        ]
        beside = pool.submit(lambda: client.chat.completions.create(**plain))
        assert beside.result().choices[0].message.content == alone
        for future in constrained:
            json.loads(future.result().choices[0].message.content)


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format.json_schema"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}},
            "response_format.json_schema.schema",
        ),
        ({"type": "yaml"}, "response_format.type"),
    ],
)
def test_bad_response_format_is_a_400_naming_it(client, response_format, param):
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, response_format, max_tokens=5)
    assert info.value.body["param"] == param


def test_a_reasoning_prompt_keeps_free_reasoning_and_constrains_the_answer(r1_model_dir):
    """R1's template opens <think>: the grammar starts after </think> (forced here by
    logit_bias, which the mask then overrides), so the JSON lands in content."""
    from conftest import openai_client_for

    from localseek.weights.tokenizer import Tokenizer

    close = Tokenizer.from_pretrained_dir(r1_model_dir).token_to_id("</think>")
    schema = SCHEMAS["two fields"]
    with openai_client_for(r1_model_dir) as r1:
        resp = ask(
            r1,
            json_schema_format("two", schema),
            temperature=0,
            logit_bias={str(close): 100},
        )
    message = resp.choices[0].message
    assert resp.choices[0].finish_reason == "stop", message
    jsonschema.validate(json.loads(message.content), schema)
