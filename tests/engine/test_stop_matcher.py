"""StopMatcher: the same answers as a rescan of the whole text, at linear cost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localseek.engine.stop_matcher import StopMatcher
from localseek.errors import InvalidRequestError
from localseek.sampling_params import MAX_STOP_BYTES, SamplingParams


def reference(text: str, start: int, stops: tuple[str, ...]) -> tuple[int, str] | None:
    """Earliest-starting stop ending after `start`, by searching the whole text."""
    best = None
    for stop in stops:
        at = text.find(stop, max(0, start - len(stop) + 1))
        if at >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    return best


def reference_held(text: str, stops: tuple[str, ...]) -> int:
    return max(
        (k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])),
        default=0,
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text("ab", min_size=1, max_size=6), min_size=1, max_size=4),
    st.lists(st.text("abc", max_size=5), max_size=12),
)
def test_matches_and_held_tail_equal_a_full_rescan(stops, chunks):
    stops = tuple(stops)
    matcher = StopMatcher(stops)
    text = ""
    for chunk in chunks:
        start = len(text)
        text += chunk
        found = matcher.feed(chunk)
        assert found == reference(text, start, stops)
        if found is not None:
            return  # the detokenizer stops feeding at the first match
        assert matcher.held() == reference_held(text, stops)


def test_long_stop_strings_fed_one_character_at_a_time():
    # The shape at the cap: long stops that almost match all the time. A rescan costs
    # (text x stop length) per token; this test would run for minutes with one.
    stops = tuple("a" * 1023 + c for c in "bcdefghijklmnopq")  # 16 KiB together
    matcher = StopMatcher(stops)
    for _ in range(20_000):
        assert matcher.feed("a") is None
    assert matcher.held() == 1023
    assert matcher.feed("q") == (20_000 - 1023, stops[-1])


def test_total_stop_bytes_are_capped_with_a_clear_error():
    SamplingParams(stop=["x" * (MAX_STOP_BYTES // 2)] * 2)
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(stop=["x" * (MAX_STOP_BYTES // 2 + 1)] * 2)
    assert info.value.param == "stop" and str(MAX_STOP_BYTES) in info.value.message
