"""A hypothesis strategy for arbitrary JSON values, shared by the fuzz tests of both apps."""

from __future__ import annotations

from hypothesis import strategies as st

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)


def any_json(max_leaves: int = 12) -> st.SearchStrategy:
    """Scalars, lists and objects nested a few levels (what Python's json can encode)."""
    return st.recursive(
        _SCALARS,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )
