"""StopMatcher: finds stop strings in text fed piece by piece, in time linear in the text.

One Knuth-Morris-Pratt automaton per stop string. Its state after the text so far is the
length of the longest tail of the text that is a prefix of the stop string, which is both what
detects a match and how much text must be held back because it may still become one. Each
character fed costs amortized O(number of stop strings), however long the text or the strings.
"""

from __future__ import annotations


def _failure(stop: str) -> list[int]:
    """KMP failure table: fail[i] = length of the longest proper border of stop[: i + 1]."""
    fail = [0] * len(stop)
    k = 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = fail[k - 1]
        if stop[i] == stop[k]:
            k += 1
        fail[i] = k
    return fail


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]):
        assert all(stops), "stop strings are validated non-empty"
        self._stops = stops
        self._fail = [_failure(s) for s in stops]
        self._state = [0] * len(stops)
        self._fed = 0  # characters fed so far

    def feed(self, chunk: str) -> tuple[int, str] | None:
        """Feed new text; the earliest-starting stop string that ends inside it, as
        (start offset in all the text fed, stop string), or None."""
        best: tuple[int, str] | None = None
        for i, stop in enumerate(self._stops):
            state, fail, end = self._state[i], self._fail[i], len(stop)
            first: int | None = None
            for j, ch in enumerate(chunk):
                while state and stop[state] != ch:
                    state = fail[state - 1]
                if stop[state] == ch:
                    state += 1
                if state == end:
                    if first is None:
                        first = self._fed + j + 1 - end
                    state = fail[state - 1]
            self._state[i] = state
            if first is not None and (best is None or first < best[0]):
                best = (first, stop)
        self._fed += len(chunk)
        return best

    def held(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        return max(self._state, default=0)
