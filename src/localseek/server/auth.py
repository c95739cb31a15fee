"""The server's API-key check: one comparison for the routes and for the early refusal."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers


def has_valid_api_key(headers: Headers, key: str | None) -> bool:
    """True when no key is configured or `Authorization: Bearer <key>` carries it."""
    if key is None:
        return True
    scheme, _, token = headers.get("authorization", "").partition(" ")
    # Constant-time: the comparison must not tell a client how much of its guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())
