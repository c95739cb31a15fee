"""Tokenizer encodes, decodes and renders chat templates exactly as transformers does."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tiny_tokenizer import R1_TEMPLATE, save_tiny_tokenizer
from tokenizers import Tokenizer as HFTokenizer

from localseek.errors import InvalidRequestError, ModelLoadError
from localseek.weights.tokenizer import NO_TEMPLATE_MESSAGE, Tokenizer, read_chat_template

TEXTS = [
    "Hello, world!",
    "你好，世界！今天天气很好。",
    "Mixed 中文 and English with emoji 🚀🎉 and code: def f(x): return x + 1",
    "  leading spaces and\ttabs\nnew lines\n\n",
    "<think>reasoning</think> the answer",
    "<|user|>hi</s><s>",
    "rare: ∑ ∫ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ⚙️ 👩‍👩‍👧 Ω",
    "x",
]

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "用中文回答 🚀"},
        {"role": "assistant", "content": "<think>user wants Chinese</think>好的"},
        {"role": "user", "content": "def f(x):\n    return x"},
    ],
]


def _hf(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def _both(directory: Path, **kwargs) -> tuple[Tokenizer, object]:
    """Ours and transformers' tokenizer for the same freshly written directory."""
    directory = save_tiny_tokenizer(directory, **kwargs)
    return Tokenizer.from_pretrained_dir(directory), _hf(directory)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def pair(tiny_dir):
    return Tokenizer.from_pretrained_dir(tiny_dir), _hf(tiny_dir)


def _variant(tmp_path: Path, *, add_bos_key: object, post_processor: bool) -> Path:
    """The tiny tokenizer with `add_bos_token` set/absent and its post-processor kept/removed."""
    save_tiny_tokenizer(tmp_path)
    tok_json = json.loads((tmp_path / "tokenizer.json").read_text())
    if not post_processor:
        tok_json["post_processor"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok_json))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    if add_bos_key == "absent":
        del config["add_bos_token"]
        del config["add_eos_token"]
    else:
        config["add_bos_token"] = add_bos_key
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def test_tiny_tokenizer_is_deterministic_and_small(tmp_path, tiny_dir):
    again = save_tiny_tokenizer(tmp_path / "again")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes()
    assert 400 <= Tokenizer.from_pretrained_dir(tiny_dir).vocab_size <= 512


# ---- encode / decode ------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_transformers(pair, text):
    ours, hf = pair
    assert ours.encode(text) == hf(text)["input_ids"]
    assert (
        ours.encode(text, add_special_tokens=False)
        == hf(text, add_special_tokens=False)["input_ids"]
    )
    assert ours.encode(text)[0] == ours.bos_token_id


@pytest.mark.parametrize(
    "add_bos_key, post_processor, expect_bos",
    [
        # tokenizer.json's post-processor decides whatever the config says (as transformers).
        (True, True, True),
        (False, True, True),
        ("absent", True, True),
        ("absent", False, False),
        (False, False, False),
    ],
)
def test_bos_rules_match_transformers(tmp_path, add_bos_key, post_processor, expect_bos):
    directory = _variant(tmp_path, add_bos_key=add_bos_key, post_processor=post_processor)
    ours, hf = Tokenizer.from_pretrained_dir(directory), _hf(directory)
    for text in TEXTS[:3]:
        assert ours.encode(text) == hf(text)["input_ids"]
        assert (ours.encode(text)[0] == ours.bos_token_id) is expect_bos


def test_config_add_bos_fills_in_for_missing_post_processor(tmp_path):
    # transformers 5's generic class ignores add_bos_token here and adds nothing; transformers 4's
    # Llama tokenizers add BOS. The config is the model author's statement, so it is followed.
    directory = _variant(tmp_path, add_bos_key=True, post_processor=False)
    tok = Tokenizer.from_pretrained_dir(directory)
    assert tok.encode("hi") == [tok.bos_token_id, *tok.encode("hi", add_special_tokens=False)]


def test_no_bos_tokenizer(tmp_path):
    ours, hf = _both(tmp_path, add_bos_token=False)
    for text in TEXTS:
        assert ours.encode(text) == hf(text)["input_ids"]
        assert ours.encode(text) == ours.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("skip", [True, False])
def test_decode_matches_transformers(pair, skip):
    ours, hf = pair
    for text in TEXTS:
        ids = ours.encode(text)
        assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(
            ids, skip_special_tokens=skip
        )
    rng = random.Random(0)
    for _ in range(50):  # arbitrary id streams, broken UTF-8 included
        ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randrange(1, 12))]
        assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(
            ids, skip_special_tokens=skip
        )


def test_roundtrip_and_reasoning_markers_survive_skip(pair):
    ours, _ = pair
    for text in TEXTS:
        if "<|user|>" in text:
            continue
        assert ours.decode(ours.encode(text)) == text
    # <think> is an added but not special token (as in DeepSeek-R1): never skipped.
    think = ours.token_to_id("<think>")
    assert think is not None and think not in ours.all_special_ids
    assert ours.decode(ours.encode("<think>a</think>b")) == "<think>a</think>b"


def test_special_token_facts(pair):
    ours, hf = pair
    assert ours.bos_token_id == hf.bos_token_id
    assert ours.eos_token_ids == frozenset({hf.eos_token_id})
    assert ours.vocab_size == len(hf)
    assert set(hf.all_special_ids) <= ours.all_special_ids
    assert ours.token_to_id("</s>") == hf.eos_token_id
    assert ours.id_to_token(hf.eos_token_id) == "</s>"


# ---- chat templates -------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["default", "r1"])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("gen_prompt", [True, False])
def test_chat_template_matches_transformers(tmp_path, template, conversation, gen_prompt):
    kwargs = {"chat_template": R1_TEMPLATE} if template == "r1" else {}
    ours, hf = _both(tmp_path, **kwargs)
    messages = CONVERSATIONS[conversation]
    expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)
    assert ours.apply_chat_template(messages, add_generation_prompt=gen_prompt) == expected
    if template == "r1" and gen_prompt:
        assert expected.endswith("<|assistant|><think>\n")


@pytest.mark.parametrize("prefix", ["The answer is", "The answer is ", "答案是 🚀"])
def test_continue_final_message_matches_transformers(pair, prefix):
    ours, hf = pair
    messages = [*CONVERSATIONS[1], {"role": "assistant", "content": prefix}]
    expected = hf.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    got = ours.apply_chat_template(
        messages, add_generation_prompt=False, continue_final_message=True
    )
    assert got == expected
    assert got.endswith(prefix) and "</s>\n" not in got[-len(prefix) - 2 :]
    # continue_final_message wins over the default add_generation_prompt=True.
    assert ours.apply_chat_template(messages, continue_final_message=True) == expected


STRIPPING_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] | trim }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


def test_continue_final_message_with_stripping_template(tmp_path):
    ours, hf = _both(tmp_path, chat_template=STRIPPING_TEMPLATE)
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": " The answer is "},
    ]
    expected = hf.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    assert ours.apply_chat_template(messages, continue_final_message=True) == expected


HF_FEATURES_TEMPLATE = (
    "{% set ns = namespace(n=0) %}"
    "{% for m in messages %}{% if m['role'] == 'tool' %}{% continue %}{% endif %}"
    "{% set ns.n = ns.n + 1 %}{{ m | tojson }}\n{% endfor %}"
    "{% if tools %}TOOLS {{ tools | tojson(indent=2) }}{% endif %}"
    "count={{ ns.n }} year={{ strftime_now('%Y')[:2] }}{{ bos_token }}{{ eos_token }}"
    "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('must start with user') }}{% endif %}"
)


def test_hf_template_features_match_transformers(tmp_path):
    ours, hf = _both(tmp_path, chat_template=HF_FEATURES_TEMPLATE)
    messages = [
        {"role": "user", "content": '<b>&"引号" 🚀</b>'},
        {"role": "tool", "content": "skipped"},
        {"role": "assistant", "content": "ok"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    expected = hf.apply_chat_template(messages, tools=tools, tokenize=False)
    assert ours.apply_chat_template(messages, add_generation_prompt=False, tools=tools) == expected
    assert "引号" in expected and "count=2" in expected
    with pytest.raises(InvalidRequestError, match="must start with user"):
        ours.apply_chat_template([{"role": "assistant", "content": "x"}])


def test_missing_chat_template_is_a_request_error(tmp_path):
    tok = Tokenizer.from_pretrained_dir(save_tiny_tokenizer(tmp_path, chat_template=None))
    assert tok.chat_template is None
    with pytest.raises(InvalidRequestError, match="no chat template") as info:
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert info.value.message == NO_TEMPLATE_MESSAGE
    tok.set_chat_template(R1_TEMPLATE)  # what --chat-template does
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]).endswith("<think>\n")


def test_template_files_and_generation_config(tmp_path):
    directory = save_tiny_tokenizer(tmp_path)
    (directory / "chat_template.jinja").write_text("J{{ messages[0]['content'] }}")
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 5]}))
    tok = Tokenizer.from_pretrained_dir(directory)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "Jhi"
    assert tok.eos_token_ids == frozenset({1, 5})
    assert (
        read_chat_template(str(directory / "chat_template.jinja"))
        == "J{{ messages[0]['content'] }}"
    )
    assert read_chat_template("{{ x }}") == "{{ x }}"
    (directory / "generation_config.json").unlink()
    (directory / "config.json").write_text(json.dumps({"eos_token_id": 6}))
    assert Tokenizer.from_pretrained_dir(directory).eos_token_ids == frozenset({1, 6})


def test_bad_template_and_missing_files_are_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        Tokenizer.from_pretrained_dir(tmp_path)
    directory = save_tiny_tokenizer(tmp_path)
    tok = Tokenizer.from_pretrained_dir(directory)
    with pytest.raises(ModelLoadError, match="does not compile"):
        tok.set_chat_template("{% for %}")


def test_from_tokenizers_with_ids(tiny_dir):
    # The GGUF loader hands a tokenizers object and token ids; no post-processor decides BOS.
    raw = HFTokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    raw.post_processor = None
    tok = Tokenizer.from_tokenizers(raw, bos_token=0, eos_token=1, add_bos_token=True)
    assert tok.bos_token == "<s>" and tok.eos_token_ids == frozenset({1})
    assert tok.encode("hi")[0] == 0 and tok.encode("hi", add_special_tokens=False)[0] != 0
    plain = Tokenizer.from_tokenizers(raw, bos_token=0, eos_token=1, add_bos_token=False)
    assert plain.encode("hi") == plain.encode("hi", add_special_tokens=False)
