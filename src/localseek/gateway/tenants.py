"""API keys -> tenants. With no tenants configured every request is the anonymous tenant."""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence

from localseek.errors import AuthenticationError, ConfigError
from localseek.gateway.config import TenantConfig

ANONYMOUS = TenantConfig(name="anonymous")


class TenantDirectory:
    """Resolves the bearer key of a request to its tenant."""

    def __init__(self, tenants: Sequence[TenantConfig]):
        self._keys: list[tuple[str, TenantConfig]] = []
        self.tenants = {t.name: t for t in tenants}
        for tenant in tenants:
            keys = list(tenant.api_keys)
            for env in tenant.api_key_envs:
                value = os.environ.get(env)
                if not value:
                    raise ConfigError(
                        f"tenant {tenant.name!r}: environment variable {env} (api_key_envs) is not set"
                    )
                keys.append(value)
            if not keys:
                raise ConfigError(f"tenant {tenant.name!r} has no api_keys or api_key_envs")
            self._keys += [(k, tenant) for k in keys]

    def resolve(self, authorization: str | None) -> TenantConfig:
        if not self._keys:
            return ANONYMOUS
        key = _bearer(authorization)
        if key is None:
            raise AuthenticationError("missing API key: send Authorization: Bearer <key>")
        for known, tenant in self._keys:
            if hmac.compare_digest(known.encode(), key.encode()):
                return tenant
        raise AuthenticationError("invalid API key")


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None
