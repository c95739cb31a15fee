"""Detectors of sensitive content: PRC resident IDs, mainland mobiles, bank cards, e-mail.

Each reads the normalized views of a string (normalize.py), so full-width digits, numbers
grouped by spaces, dashes or dots, and "(at)" for @ are caught as the plain spelling is.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from localseek.gateway.normalize import TextViews

# 18-character resident identity number (GB 11643-1999): region, birth date, sequence, check.
_PRC_ID = re.compile(
    r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]"
)
_PRC_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_PRC_ID_CHECK = "10X98765432"

# Mainland mobile: 1[3-9]x xxxx xxxx, optionally after 86 / 0086 (the + is not a digit).
_CN_MOBILE = re.compile(r"(?:0086|86)?1[3-9]\d{9}")

# E-mail around one @: a local-part character to its left, a dotted domain to its right.
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_MAX_DOMAIN = 255


def prc_id_checksum_ok(number: str) -> bool:
    """The ISO 7064 MOD 11-2 check character of an 18-character PRC resident ID."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _PRC_ID_WEIGHTS, strict=True))
    return _PRC_ID_CHECK[total % 11] == number[17].upper()


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by bank card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def prc_id(views: TextViews) -> bool:
    return any(_PRC_ID.fullmatch(n) and prc_id_checksum_ok(n) for n in views.numbers)


def cn_mobile(views: TextViews) -> bool:
    return any(_CN_MOBILE.fullmatch(n) for n in views.numbers)


def bank_card(views: TextViews) -> bool:
    return any(13 <= len(n) <= 19 and n.isdigit() and luhn_ok(n) for n in views.numbers)


def email(views: TextViews) -> bool:
    text = views.email
    at = text.find("@")
    while at != -1:
        # A bounded window around each @, never a scan from every start: linear in the text.
        domain = text[at + 1 : at + 1 + _MAX_DOMAIN]
        if at > 0 and text[at - 1] in _LOCAL_CHARS and _DOMAIN.match(domain):
            return True
        at = text.find("@", at + 1)
    return False


def has_prc_id(text: str) -> bool:
    return prc_id(TextViews(text))


def has_cn_mobile(text: str) -> bool:
    return cn_mobile(TextViews(text))


def has_bank_card(text: str) -> bool:
    return bank_card(TextViews(text))


def has_email(text: str) -> bool:
    return email(TextViews(text))


DETECTORS: dict[str, Callable[[TextViews], bool]] = {
    "prc_id": prc_id,
    "cn_mobile": cn_mobile,
    "bank_card": bank_card,
    "email": email,
}
