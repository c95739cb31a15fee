"""Detectors of sensitive content: PRC resident IDs, mainland mobiles, bank cards, e-mail."""

from __future__ import annotations

import re
from collections.abc import Callable

# 18-character resident identity number (GB 11643-1999): region, birth date, sequence, check.
_PRC_ID = re.compile(
    r"(?<![0-9A-Za-z])([1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx])(?![0-9A-Za-z])"
)
_PRC_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_PRC_ID_CHECK = "10X98765432"

# Mainland mobile: 1[3-9]x xxxx xxxx, optionally +86 / 0086, optionally grouped 3-4-4.
_CN_MOBILE = re.compile(r"(?<![0-9])(?:(?:\+|00)86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?![0-9])")

# Card numbers: 13-19 digits, optionally grouped by spaces or dashes; confirmed by Luhn.
_CARD = re.compile(r"(?<![0-9])\d(?:[ -]?\d){12,18}(?![0-9])")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


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


def has_prc_id(text: str) -> bool:
    return any(prc_id_checksum_ok(m.group(1)) for m in _PRC_ID.finditer(text))


def has_cn_mobile(text: str) -> bool:
    return _CN_MOBILE.search(text) is not None


def has_bank_card(text: str) -> bool:
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return True
    return False


def has_email(text: str) -> bool:
    return _EMAIL.search(text) is not None


DETECTORS: dict[str, Callable[[str], bool]] = {
    "prc_id": has_prc_id,
    "cn_mobile": has_cn_mobile,
    "bank_card": has_bank_card,
    "email": has_email,
}
