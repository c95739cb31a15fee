"""Views of request text that undo common spellings of sensitive data, for the detectors.

Each view runs in time linear in the text (the policy runs on the event loop, over bodies of up
to the body limit): no regex here can backtrack over more than a few characters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

# Characters that render as nothing; inserted to split a number or a word for a scanner's eyes.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))

# Between two groups of a number: up to 3 of these (space, dash, dot, slash, underscore, middle
# dot); NFKC has already turned full-width forms into these ASCII ones.
_DIGIT_GROUP = re.compile(r"[0-9]+[Xx]?")
_GROUP_SEPARATOR = re.compile(r"[ \t\-./_\u00b7]{1,3}")
_MAX_NUMBER_DIGITS = 19  # the longest number a detector looks for (a card)

_AT = re.compile(r"\s*[(\[{<]\s*(?:at|AT|At)\s*[)\]}>]\s*")
_DOT = re.compile(r"\s*[(\[{<]\s*(?:dot|DOT|Dot)\s*[)\]}>]\s*")

# Three or more single letters or digits, each followed by one separator: "C O N F I D ...".
_SPACED = re.compile(r"(?<![^\W_])(?:[^\W_][ .\-_*]){2,}[^\W_](?![^\W_])")


def nfkc(text: str) -> str:
    """Full-width digits and letters, the full-width @, ligatures... in their plain form."""
    return unicodedata.normalize("NFKC", text).translate(_INVISIBLE)


def numbers(text: str) -> Iterator[str]:
    """Every number of up to 19 digits that the text spells with separators between groups.

    "138 1234 5678", "138.1234.5678" and "4111-1111-1111-1111" each yield their digits joined;
    every run of consecutive groups is yielded (so two phone numbers side by side are both
    seen), the groups themselves included. Takes NFKC text.
    """
    groups: list[str] = []
    end = -1
    for match in _DIGIT_GROUP.finditer(text):
        joined = groups and _GROUP_SEPARATOR.fullmatch(text, end, match.start())
        if not joined:
            yield from _spans(groups)
            groups = []
        groups.append(match.group(0))
        end = match.end()
        if groups[-1][-1] in "Xx":  # an ID's check character ends its number
            yield from _spans(groups)
            groups = []
    yield from _spans(groups)


def _spans(groups: list[str]) -> Iterator[str]:
    """Each run of consecutive groups short enough to be one number (linear in the groups).

    A run is a group alone, or a first group of 2+ digits followed by groups of 3+ (how numbers
    are grouped when written): "1.38.1234.5678", a version, is not read as a phone number.
    """
    for start in range(len(groups)):
        joined = groups[start]
        if len(joined) <= _MAX_NUMBER_DIGITS:
            yield joined
        if len(joined) < 2:
            continue
        for i in range(start + 1, len(groups)):
            if len(groups[i]) < 3 or len(joined) + len(groups[i]) > _MAX_NUMBER_DIGITS:
                break
            joined += groups[i]
            yield joined


def email_view(text: str) -> str:
    """NFKC text with "(at)"/"[at]" as @ and "(dot)" as ".": zhang.san(at)example(dot)com."""
    return _DOT.sub(".", _AT.sub("@", text))


def unspaced(text: str) -> str:
    """Letters written one by one with separators joined into a word: C O N F I D E N T I A L."""
    return _SPACED.sub(lambda m: m.group(0)[::2], text)


class TextViews:
    """One string's views, each computed at most once however many rules look at it."""

    def __init__(self, raw: str):
        self.text = nfkc(raw)
        self._numbers: tuple[str, ...] | None = None
        self._email: str | None = None
        self._words: str | None = None

    @property
    def numbers(self) -> tuple[str, ...]:
        if self._numbers is None:
            self._numbers = tuple(numbers(self.text))
        return self._numbers

    @property
    def email(self) -> str:
        if self._email is None:
            self._email = email_view(self.text)
        return self._email

    @property
    def words(self) -> str:
        """Lower-cased, with spaced-out letters joined (for keywords)."""
        if self._words is None:
            self._words = unspaced(self.text).lower()
        return self._words
