"""Model versions: a public model name -> weighted versions (stable 90 / canary 10), sticky per key.

A version is the model id its upstreams serve (their `models:`), so routing a request to a
version is rewriting its `model` before the gateway balances it. The choice is a hash of the
sticky key (session or tenant) onto the weights' cumulative ranges: every gateway replica
agrees without sharing state, a conversation stays on one version, and shifting 90/10 to 80/20
moves only the sessions in the slice that changed hands. Imports no torch and no asyncio.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from localseek.errors import ConfigError, InvalidRequestError, NotFoundError

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
STICKY = ("session", "tenant", "none")
_SCALE = 1 << 64


@dataclass(frozen=True)
class VersionConfig:
    """One version of a public model."""

    name: str  # stable, canary, v2 ... (a metrics label: keep the set small)
    model: str  # the model id its upstreams serve
    weight: int = 0  # share of sessions; a model's weights need not sum to 100

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"version name must match {_NAME_RE.pattern}, got {self.name!r}")
        if not self.model:
            raise ConfigError(f"version {self.name!r}: model must be a non-empty model id")
        if self.weight < 0:
            raise ConfigError(f"version {self.name!r}: weight must be >= 0, got {self.weight}")


@dataclass(frozen=True)
class PublicModelConfig:
    """A model name clients use, served by one or more versions."""

    name: str
    versions: tuple[VersionConfig, ...]
    # What keeps a client on one version: session (X-Session-Id header, else the body's
    # `user`), tenant (the API key's tenant) or none (every request drawn anew).
    sticky: str = "session"

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a public model name must be non-empty")
        if not self.versions:
            raise ConfigError(f"model {self.name!r}: at least one version is required")
        names = [v.name for v in self.versions]
        if len(set(names)) != len(names):
            raise ConfigError(f"model {self.name!r}: version names must be unique, got {names}")
        if sum(v.weight for v in self.versions) <= 0:
            raise ConfigError(f"model {self.name!r}: at least one version needs a weight > 0")
        if self.sticky not in STICKY:
            raise ConfigError(f"model {self.name!r}: sticky must be one of {STICKY}")


def check_served(models: tuple[PublicModelConfig, ...], serves: Callable[[str], bool]) -> None:
    """Every version's model id must be served by some upstream, or its traffic would 404."""
    for model in models:
        for version in model.versions:
            if not serves(version.model):
                raise ConfigError(
                    f"models: {model.name!r} version {version.name!r} routes to model "
                    f"{version.model!r}, which no upstream serves (add it to an upstream's models)",
                    param="models",
                )
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"models: public names must be unique, got {names}", param="models")


@dataclass(frozen=True)
class Route:
    """Where one request goes."""

    public: str
    version: str
    model: str


def sticky_point(key: str, public: str) -> float:
    """A key's fixed place in [0, 1) for one public model (the same on every gateway)."""
    digest = hashlib.blake2b(f"{public}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class VersionRouter:
    """Current weights of every public model, changed at run time by the admin API.

    Each change remembers the weights it replaced, so `rollback` undoes the last change.
    """

    def __init__(self, models: tuple[PublicModelConfig, ...], rng: random.Random | None = None):
        self._models = {m.name: m for m in models}
        self._weights = {m.name: {v.name: v.weight for v in m.versions} for m in models}
        self._history: dict[str, list[dict[str, int]]] = {m.name: [] for m in models}
        self._rng = rng or random.Random()

    def serves(self, public: str) -> bool:
        return public in self._models

    def public_names(self) -> list[str]:
        return list(self._models)

    def sticky(self, public: str) -> str:
        return self._model(public).sticky

    def route(self, public: str, key: str | None) -> Route:
        """The version for a request to `public` whose sticky key is `key` (None: random)."""
        model = self._model(public)
        weights = self._weights[public]
        total = sum(weights.values())
        point = sticky_point(key, public) if key is not None else self._rng.random()
        target = point * total
        chosen = None
        for version in model.versions:
            w = weights[version.name]
            if w == 0:
                continue
            chosen = version
            if target < w:
                break
            target -= w
        assert chosen is not None  # weights always have a positive total
        return Route(public, chosen.name, chosen.model)

    # ---- admin ------------------------------------------------------------------------------

    def set_weights(self, public: str, weights: Mapping[str, int]) -> dict[str, int]:
        """Replace the weights of the named versions (others keep theirs)."""
        model = self._model(public)
        known = {v.name for v in model.versions}
        new = dict(self._weights[public])
        for name, weight in weights.items():
            if name not in known:
                raise NotFoundError(
                    f"model {public!r} has no version {name!r}; versions: {sorted(known)}",
                    param="weights",
                    code="version_not_found",
                )
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
                raise InvalidRequestError(
                    f"weight of {name!r} must be an integer >= 0, got {weight!r}", param="weights"
                )
            new[name] = weight
        if sum(new.values()) <= 0:
            raise InvalidRequestError(
                "at least one version must keep a weight > 0", param="weights"
            )
        self._history[public].append(self._weights[public])
        self._weights[public] = new
        return dict(new)

    def promote(self, public: str, version: str) -> dict[str, int]:
        """All new sessions to `version`."""
        names = [v.name for v in self._model(public).versions]
        if version not in names:
            raise NotFoundError(
                f"model {public!r} has no version {version!r}; versions: {names}",
                param="version",
                code="version_not_found",
            )
        return self.set_weights(public, {n: (100 if n == version else 0) for n in names})

    def rollback(self, public: str) -> dict[str, int]:
        """Back to the weights before the last change."""
        self._model(public)
        if not self._history[public]:
            raise InvalidRequestError(
                f"model {public!r} has no earlier weights to roll back to", param="model"
            )
        self._weights[public] = self._history[public].pop()
        return dict(self._weights[public])

    def snapshot(self) -> dict[str, dict]:
        return {
            name: {
                "sticky": model.sticky,
                "versions": [
                    {"name": v.name, "model": v.model, "weight": self._weights[name][v.name]}
                    for v in model.versions
                ],
            }
            for name, model in self._models.items()
        }

    def _model(self, public: str) -> PublicModelConfig:
        model = self._models.get(public)
        if model is None:
            raise NotFoundError(
                f"no versioned model {public!r}; versioned models: {sorted(self._models)}",
                param="model",
            )
        return model
