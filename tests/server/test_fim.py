"""FIM on /beta/completions: prompt + suffix in the model's FIM tokens, or a 400 naming it."""

from __future__ import annotations

import shutil

import openai
import pytest
from conftest import SERVED, openai_client_for
from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer

from localseek.server.fim import FIM_FORMATS, fim_format
from localseek.weights.tokenizer import Tokenizer

pytestmark = pytest.mark.timeout(120)

DEEPSEEK = FIM_FORMATS[0]
PREFIX = "def add(a, b):\n"
SUFFIX = "\n    return c\n"


def with_fim_tokens(tok: HFTokenizer, fmt) -> HFTokenizer:
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (fmt.begin, fmt.hole, fmt.end)]
    )
    return tok


@pytest.fixture(scope="module")
def fim_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with DeepSeek-Coder's three FIM tokens added to its vocabulary."""
    path = tmp_path_factory.mktemp("fim") / "model"
    shutil.copytree(tiny_model_dir, path)
    tok = with_fim_tokens(HFTokenizer.from_file(str(path / "tokenizer.json")), DEEPSEEK)
    tok.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def fim_client(fim_model_dir):
    with openai_client_for(fim_model_dir, base="/beta", kv_cache_tokens=2048) as client:
        yield client


def test_suffix_builds_the_deepseek_fim_prompt(fim_client, fim_model_dir):
    tokenizer = Tokenizer.from_pretrained_dir(fim_model_dir)
    fim = fim_client.completions.create(
        model=SERVED, prompt=PREFIX, suffix=SUFFIX, max_tokens=6, temperature=0
    )
    # The same answer as the FIM layout sent by hand: the suffix reached the model.
    by_hand = fim_client.completions.create(
        model=SERVED, prompt=DEEPSEEK.prompt(PREFIX, SUFFIX), max_tokens=6, temperature=0
    )
    assert fim.choices[0].text == by_hand.choices[0].text
    expected_ids = tokenizer.encode(DEEPSEEK.prompt(PREFIX, SUFFIX))
    assert fim.usage.prompt_tokens == len(expected_ids)
    assert tokenizer.token_to_id(DEEPSEEK.hole) in expected_ids
    plain = fim_client.completions.create(model=SERVED, prompt=PREFIX, max_tokens=6, temperature=0)
    assert plain.usage.prompt_tokens < fim.usage.prompt_tokens


def test_suffix_streams_and_takes_a_batch_of_prompts(fim_client):
    stream = fim_client.completions.create(
        model=SERVED,
        prompt=[PREFIX, "x = "],
        suffix=SUFFIX,
        max_tokens=4,
        temperature=0,
        stream=True,
    )
    indices = {c.index for chunk in stream for c in chunk.choices}
    assert indices == {0, 1}


def test_suffix_with_token_ids_or_echo_is_refused(fim_client):
    with pytest.raises(openai.BadRequestError) as info:
        fim_client.completions.create(model=SERVED, prompt=[1, 2, 3], suffix=SUFFIX, max_tokens=2)
    assert info.value.body["param"] == "suffix"
    with pytest.raises(openai.BadRequestError) as info:
        fim_client.completions.create(
            model=SERVED, prompt=PREFIX, suffix=SUFFIX, echo=True, max_tokens=2
        )
    assert info.value.body["param"] == "echo"


def test_a_model_without_fim_tokens_is_a_400_naming_it(server):
    client = openai.OpenAI(base_url=server.url + "/beta", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=SERVED, prompt=PREFIX, suffix=SUFFIX, max_tokens=2)
    assert info.value.body["param"] == "suffix"
    assert repr(SERVED) in info.value.body["message"]


@pytest.mark.parametrize("fmt", FIM_FORMATS, ids=lambda f: f.name)
def test_each_fim_family_is_recognised(tiny_model_dir, fmt):
    tok = with_fim_tokens(HFTokenizer.from_file(str(tiny_model_dir / "tokenizer.json")), fmt)
    assert fim_format(Tokenizer(tok)) == fmt
    assert fim_format(Tokenizer.from_pretrained_dir(tiny_model_dir)) is None
