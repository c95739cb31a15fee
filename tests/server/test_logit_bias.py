"""logit_bias over HTTP with the openai SDK: +100 forces a token, -100 bans it, bad ids named."""

from __future__ import annotations

import openai
import pytest
from conftest import SERVED

from localseek.weights.tokenizer import Tokenizer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return Tokenizer.from_pretrained_dir(tiny_model_dir)


def two_tokens(tokenizer) -> tuple[int, int]:
    ids = tokenizer.encode("The quick brown fox", add_special_tokens=False)
    first, second = sorted(set(ids))[:2]
    return first, second


def completion(client, bias: dict, **kw):
    kw.setdefault("max_tokens", 4)
    return client.completions.create(
        model=SERVED,
        prompt="Once upon a time",
        logit_bias={str(k): v for k, v in bias.items()},
        extra_body={"ignore_eos": True},
        **kw,
    )


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_plus_100_forces_a_token(client, tokenizer, temperature):
    for token in two_tokens(tokenizer):
        text = completion(client, {token: 100}, temperature=temperature).choices[0].text
        assert text == tokenizer.decode([token] * 4)


def test_minus_100_bans_the_greedy_choice(client, tokenizer):
    first = completion(client, {}, temperature=0, max_tokens=1).choices[0].text
    # Every id that reads as the greedy first token (usually one), each banned.
    same = [t for t in range(len(tokenizer)) if tokenizer.decode([t]) == first]
    assert same
    banned = completion(client, dict.fromkeys(same, -100), temperature=0, max_tokens=1)
    assert banned.choices[0].text != first


def test_chat_honours_logit_bias(client, tokenizer):
    a, _ = two_tokens(tokenizer)
    resp = client.chat.completions.create(
        model=SERVED,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        temperature=0,
        logit_bias={str(a): 100},
        extra_body={"ignore_eos": True},
    )
    assert resp.choices[0].message.content == tokenizer.decode([a] * 3)


@pytest.mark.parametrize(
    ("bias", "param"),
    [
        ({"99999": 5}, "logit_bias.99999"),
        ({"abc": 1}, "logit_bias.abc"),
        ({"-3": 1}, "logit_bias.-3"),
        ({"5": 150}, "logit_bias.5"),
    ],
)
def test_bad_logit_bias_is_a_400_naming_the_id(client, bias, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=SERVED, prompt="hi", max_tokens=2, logit_bias=bias)
    assert info.value.body["param"] == param
