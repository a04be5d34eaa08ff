"""Typed configuration: YAML (safe loader) and `key=value` overrides into frozen dataclasses.

Unknown keys, wrong types and values outside a `Literal` are refused with a message that names the
key and what is allowed, before any training starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


def load_yaml(path: str | os.PathLike) -> dict:
    """Reads a YAML mapping with the safe loader (no Python objects from user files)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found. Received: config={str(path)!r}.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"Config file {path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path} must hold a mapping of keys to values. "
            f"Received: a {type(data).__name__}."
        )
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Applies `dotted.key=value` overrides (values parsed as YAML scalars) to a nested dict."""
    data = {key: (dict(value) if isinstance(value, dict) else value) for key, value in data.items()}
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or not key:
            raise ConfigError(
                f"Expected an override like distill.temperature=4. Received: {override!r}."
            )
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError as error:
            problem = str(error).strip().splitlines()[0]
            raise ConfigError(
                f"Cannot read the value of {key} as YAML ({problem}). Values are plain YAML "
                f"scalars or lists (4, 0.5, true, [1, 2], text); quote text with special "
                f"characters. Received: {override!r}."
            ) from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{part!r} is not a section. Received: {override!r}.")
        node[parts[-1]] = value
    return data


def from_dict(cls: type[T], data: dict | None, prefix: str = "") -> T:
    """Builds dataclass `cls` from `data`, checking keys, types and allowed values."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Expected a mapping for {prefix.rstrip('.') or 'the config'}. Received: {data!r}."
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields))
        raise ConfigError(
            f"Unknown config key '{prefix}{unknown[0]}'. Allowed keys"
            f"{' under ' + prefix.rstrip('.') if prefix else ''}: {allowed}. "
            f"Received: {prefix}{unknown[0]}={data[unknown[0]]!r}."
        )
    hints = get_type_hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, f"{prefix}{name}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(str(error)) from None


def to_dict(config) -> dict:
    """The plain-dict form of a config dataclass (tuples as lists), for YAML/JSON/MLflow."""
    return _plain(dataclasses.asdict(config))


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` to `{"a.b": 1}`."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _coerce(annotation, value, key: str):
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed:
            raise ConfigError(
                f"Invalid value for {key}. Allowed values: {', '.join(map(repr, allowed))}. "
                f"Received: {key}={value!r}."
            )
        return value
    if origin is tuple:
        item_type = get_args(annotation)[0]
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"Expected a list for {key}. Received: {key}={value!r}.")
        return tuple(_coerce(item_type, item, key) for item in value)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, prefix=f"{key}.")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Expected true or false for {key}. Received: {key}={value!r}.")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise ConfigError(f"Expected an integer for {key}. Received: {key}={value!r}.")
        return value
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"Expected a number for {key}. Received: {key}={value!r}.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Expected a number for {key}. Received: {key}={value!r}.") from None
        if not math.isfinite(number):
            raise ConfigError(f"Expected a finite number for {key}. Received: {key}={value!r}.")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"Expected a string for {key}. Received: {key}={value!r}.")
        return value
    raise ConfigError(f"Unsupported config type {annotation!r} for {key}.")


def check(condition: bool, key: str, expected: str, value) -> None:
    """Raises `ConfigError` naming `key` when `condition` is false (for `__post_init__` checks)."""
    if not condition:
        raise ConfigError(f"Expected {key} {expected}. Received: {key}={value!r}.")
