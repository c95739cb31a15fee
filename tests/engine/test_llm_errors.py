"""Bad input to the offline API gets a clear error and changes nothing."""

from __future__ import annotations

import json

import pytest
from tiny_models import make_tiny_model

from localseek import LLM, SamplingParams
from localseek.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelLoadError,
    UnsupportedModelError,
)


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    model_dir = make_tiny_model(tmp_path_factory.mktemp("llama"), "llama")
    return LLM(
        str(model_dir), dtype="float32", device="cpu", show_progress=False, max_model_len=128
    )


def assert_pool_whole(llm):
    bm = llm.engine.block_manager
    assert bm.num_free_blocks() == bm.num_total_blocks
    assert not llm.engine.has_unfinished()


def test_empty_prompt_is_refused(llm):
    with pytest.raises(InvalidRequestError, match="empty"):
        llm.generate([""], SamplingParams(max_tokens=4))
    with pytest.raises(InvalidRequestError, match="at least one token"):
        llm.generate([[]], SamplingParams(max_tokens=4))
    assert_pool_whole(llm)


def test_prompt_longer_than_context_names_both_numbers(llm):
    with pytest.raises(ContextLengthError, match=r"200 tokens.*128"):
        llm.generate([[1] * 200], SamplingParams(max_tokens=4))
    assert_pool_whole(llm)


def test_one_bad_prompt_in_a_batch_queues_nothing(llm):
    with pytest.raises(ContextLengthError):
        llm.generate([[1, 2, 3], [1] * 500], SamplingParams(max_tokens=4))
    assert_pool_whole(llm)
    # The engine still works afterwards.
    out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert len(out[0].token_ids) == 3


def test_token_ids_outside_vocabulary(llm):
    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        llm.generate([[1, 10**7]], SamplingParams(max_tokens=4))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": -5}, "top_k"),
    ],
)
def test_bad_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(InvalidRequestError, match=field) as info:
        SamplingParams(**kwargs)
    assert info.value.param == field


def test_max_tokens_is_capped_by_the_context(llm):
    out = llm.generate([[1] * 120], SamplingParams(temperature=0, max_tokens=50, ignore_eos=True))
    assert len(out[0].token_ids) == 8
    assert out[0].finish_reason == "length"


def test_unknown_model_path():
    with pytest.raises(ModelLoadError, match="no-such-model-dir"):
        LLM("./no-such-model-dir", show_progress=False)


def test_unsupported_architecture_is_named(tmp_path):
    model_dir = make_tiny_model(tmp_path, "llama")
    config = json.loads((model_dir / "config.json").read_text())
    config["architectures"] = ["FancyNewForCausalLM"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="FancyNewForCausalLM"):
        LLM(str(model_dir), show_progress=False)
