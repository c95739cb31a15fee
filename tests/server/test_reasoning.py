"""The <think> splitter: both R1 forms, a block that never closes, tags split across deltas."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from localseek.server.reasoning import (
    ReasoningSplitter,
    prompt_opens_reasoning,
    split_reasoning,
    template_has_reasoning,
)


def stream(pieces: list[str], start_in_reasoning: bool) -> tuple[str, str]:
    splitter = ReasoningSplitter(start_in_reasoning)
    reasoning, content = "", ""
    for piece in pieces:
        r, c = splitter.feed(piece)
        reasoning, content = reasoning + r, content + c
    r, c = splitter.finish()
    return reasoning + r, content + c


def test_model_opens_and_closes_the_block():
    text = "<think>\nLet me add 2 and 2.\n</think>\n\nThe answer is 4."
    assert split_reasoning(text, False) == ("Let me add 2 and 2.\n", "The answer is 4.")


def test_template_opened_the_block_so_only_the_close_appears():
    text = "Let me think.</think>\n\nFour."
    assert split_reasoning(text, True) == ("Let me think.", "Four.")


def test_block_never_closed_is_all_reasoning():
    assert split_reasoning("<think>still thinking when max_tokens hit", False) == (
        "still thinking when max_tokens hit",
        "",
    )
    assert split_reasoning("thinking, cut off", True) == ("thinking, cut off", "")


def test_no_block_at_all_is_content():
    assert split_reasoning("Just an answer.", False) == ("", "Just an answer.")


def test_tags_split_across_deltas():
    pieces = ["<th", "ink>", "a b", "</thi", "nk>", "\n", "answer"]
    assert stream(pieces, False) == ("a b", "answer")


def test_held_back_text_is_released_when_it_is_not_a_tag():
    splitter = ReasoningSplitter(True)
    assert splitter.feed("x </") == ("x ", "")  # "</" might start </think>
    assert splitter.feed("b> more") == ("</b> more", "")


def test_a_lone_angle_bracket_at_the_start_of_content():
    assert split_reasoning("<b>bold</b>", False) == ("", "<b>bold</b>")


def test_prompt_and_template_detection():
    assert prompt_opens_reasoning("<|assistant|><think>\n")
    assert not prompt_opens_reasoning("<|assistant|><think>\n\n</think>\n\n")
    assert not prompt_opens_reasoning("<|assistant|>")
    assert template_has_reasoning("...{{ '<think>\\n' }}")
    assert not template_has_reasoning(None)


_alphabet = st.sampled_from(["a", " ", "\n", "<", ">", "/", "<think>", "</think>", "think", "é"])


@given(
    parts=st.lists(_alphabet, max_size=30),
    cuts=st.lists(st.integers(0, 200), max_size=10),
    start=st.booleans(),
)
def test_any_chunking_gives_the_whole_text_split(parts, cuts, start):
    text = "".join(parts)
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert stream(pieces, start) == split_reasoning(text, start)
