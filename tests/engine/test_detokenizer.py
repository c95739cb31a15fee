"""IncrementalDetokenizer streams exactly the final text, never half a character or stop string."""

from __future__ import annotations

import random

import pytest
from tiny_tokenizer import save_tiny_tokenizer

from localseek.engine.detokenizer import IncrementalDetokenizer
from localseek.sampling_params import SamplingParams
from localseek.weights.tokenizer import Tokenizer

TEXTS = [
    "Hello 你好，世界！🚀🎉 def f(x): return x",
    "深度求索的模型会先思考 🤖🧠 then answers in English.",
    "emoji only 👩‍👩‍👧❤️🔥✨ and rare 𝔘𝔫𝔦 ∑∫",
]
PROMPT = "<|user|>写一首诗 please<|assistant|>"


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_pretrained_dir(save_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def stream(tok: Tokenizer, ids: list[int], params: SamplingParams, prompt: list[int]):
    """Feed ids one at a time; returns (detokenizer, deltas, stop-string results per token)."""
    detok = IncrementalDetokenizer(tok, params, prompt)
    deltas, stops = [], []
    for token_id in ids:
        stops.append(detok.add(token_id))
        deltas.append(detok.new_text())
        assert "".join(deltas) == detok.text  # text is always what was streamed so far
    deltas.append(detok.finish())
    return detok, deltas, stops


def test_multibyte_characters_never_break_mid_stream(tok):
    prompt = tok.encode(PROMPT)
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        # The tiny BPE really splits characters across tokens, or this test proves nothing.
        assert any("\ufffd" in tok.decode([i]) for i in ids)
        detok, deltas, _ = stream(tok, ids, SamplingParams(), prompt)
        assert all("\ufffd" not in d for d in deltas)
        assert "".join(deltas) == detok.text == text


@pytest.mark.parametrize("skip_special", [True, False])
def test_random_streams_concatenate_to_final_decode(tok, skip_special):
    rng = random.Random(1234)
    params = SamplingParams(skip_special_tokens=skip_special)
    for _ in range(200):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 40))]
        prompt = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 8))]
        detok, deltas, _ = stream(tok, ids, params, prompt)
        expected = tok.decode(ids, skip_special_tokens=skip_special)
        assert "".join(deltas) == detok.text == expected


def test_window_stays_bounded(tok):
    """Each token decodes a few ids, not the whole output (O(1) per token)."""
    sizes: list[int] = []

    class Recording(Tokenizer):
        def decode(self, ids, skip_special_tokens=True):
            sizes.append(len(ids))
            return super().decode(ids, skip_special_tokens)

    recording = Recording(tok.backend, bos_token="<s>", eos_token="</s>")
    ids = tok.encode(" ".join(TEXTS) * 20, add_special_tokens=False)
    detok, deltas, _ = stream(recording, ids, SamplingParams(), [])
    assert "".join(deltas) == tok.decode(ids)
    assert len(ids) > 500 and max(sizes) <= 8


def test_stop_string_spanning_tokens_is_cut_exactly(tok):
    text = "Hello 你好 world 世界END tail that must not appear"
    ids = tok.encode(text, add_special_tokens=False)
    params = SamplingParams(stop=["世界END"])
    detok, deltas, stops = stream(tok, ids, params, [])
    assert "".join(deltas) == detok.text == "Hello 你好 world "
    # add() reports the stop exactly once, on the token that completed it.
    hit = [i for i, s in enumerate(stops) if s is not None]
    assert len(hit) == 1 and stops[hit[0]] == "世界END"
    assert tok.decode(ids[: hit[0] + 1]).endswith("世界END")
    assert "世界END" not in tok.decode(ids[: hit[0]])
    assert detok.stop_string == "世界END"


def test_partial_stop_is_held_back_then_released(tok):
    text = "a <EN b <END c"
    ids = tok.encode(text, add_special_tokens=False)
    detok, deltas, _ = stream(tok, ids, SamplingParams(stop=["<END>"]), [])
    assert "".join(deltas) == text  # "<END" never completed: all of it comes out at finish
    shown = ""
    for delta in deltas[:-1]:
        shown += delta
        assert not any(shown.endswith("<END>"[:k]) for k in range(1, 5))
    # A partial stop string at the very end is held until finish() releases it.
    ids = tok.encode("a <EN b <EN", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, SamplingParams(stop=["<END>"]), [])
    for token_id in ids:
        detok.add(token_id)
    assert detok.new_text() == detok.text == "a <EN b "
    assert detok.finish() == "<EN" and detok.text == "a <EN b <EN"


def test_include_stop_str_in_output(tok):
    ids = tok.encode("answer: 42</done> more", add_special_tokens=False)
    params = SamplingParams(stop=["</done>"], include_stop_str_in_output=True)
    detok, deltas, _ = stream(tok, ids, params, [])
    assert "".join(deltas) == detok.text == "answer: 42</done>"


def test_earliest_of_several_stop_strings_wins(tok):
    ids = tok.encode("one two three four", add_special_tokens=False)
    detok, _, _ = stream(tok, ids, SamplingParams(stop=["four", "two"]), [])
    assert detok.text == "one " and detok.stop_string == "two"


def test_stop_strings_ignored_until_min_tokens(tok):
    ids = tok.encode("x STOP y STOP z", add_special_tokens=False)
    n_first = len(tok.encode("x STOP", add_special_tokens=False))
    params = SamplingParams(stop=["STOP"], min_tokens=n_first + 1)
    detok, _, stops = stream(tok, ids, params, [])
    assert detok.text == "x STOP y "
    assert [s for s in stops if s] == ["STOP"]


@pytest.mark.parametrize("seed", range(30))
def test_random_text_and_stop_matches_reference(tok, seed):
    rng = random.Random(seed)
    alphabet = ["a", "b", " ", "你", "好", "🚀", "\n", "x"]
    text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(5, 40)))
    start = rng.randrange(len(text))
    stop = text[start : start + rng.randrange(1, 5)] if rng.random() < 0.8 else "zz"
    ids = tok.encode(text, add_special_tokens=False)
    detok, deltas, _ = stream(tok, ids, SamplingParams(stop=[stop]), tok.encode(PROMPT))
    at = text.find(stop)
    expected = text if at < 0 else text[:at]
    assert "".join(deltas) == detok.text == expected
    assert all("\ufffd" not in d for d in deltas)


def test_special_tokens_kept_when_not_skipped(tok):
    ids = tok.encode("<think>plan</think>answer<|user|>", add_special_tokens=False)
    kept, _, _ = stream(tok, ids, SamplingParams(skip_special_tokens=False), [])
    skipped, _, _ = stream(tok, ids, SamplingParams(), [])
    assert kept.text == "<think>plan</think>answer<|user|>"
    assert skipped.text == "<think>plan</think>answer"  # <think> is not special; <|user|> is


def test_prompt_ending_mid_character(tok):
    # A prompt that stops inside a character: the output's continuation bytes must not vanish.
    ids = tok.encode("你好🚀", add_special_tokens=False)
    split = next(i for i in range(1, len(ids)) if "\ufffd" in tok.decode(ids[:i]))
    detok, deltas, _ = stream(tok, ids[split:], SamplingParams(), ids[:split])
    assert "".join(deltas) == tok.decode(ids[split:])
