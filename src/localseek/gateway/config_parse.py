"""Builds frozen config dataclasses from parsed YAML, naming the field path in every error."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from localseek.errors import ConfigError

T = TypeVar("T")


def build_dataclass(cls: type[T], data: Any, path: str) -> T:
    """An instance of the dataclass `cls` from a mapping; unknown keys and bad types are errors."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}", param=path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        bad = _join(path, str(unknown[0]))
        raise ConfigError(
            f"{bad}: unknown field; known fields of {where}: {sorted(fields)}", param=bad
        )
    kwargs = {name: _convert(hints[name], value, _join(path, name)) for name, value in data.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        bad = _join(path, missing[0])
        raise ConfigError(f"{bad}: required field is missing", param=bad)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}", param=path) from exc


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}", param=path)
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}", param=path)
        return {
            _convert(args[0], k, path): _convert(args[1], v, f"{path}.{k}")
            for k, v in value.items()
        }
    return _scalar(hint, value, path)


def _scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{path}: unsupported config type {hint!r}", param=path)
    raise ConfigError(
        f"{path}: expected {hint.__name__}, got {value!r} ({type(value).__name__})", param=path
    )


def load_config_file(cls: type[T], path: str | Path, what: str) -> T:
    """Read a YAML file into the dataclass `cls`; errors name the file (`what` it is) and field."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {exc}") from exc
    try:
        return build_dataclass(cls, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", param=exc.param) from exc
