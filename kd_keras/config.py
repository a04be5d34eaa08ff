"""Typed configuration: YAML (safe loader) and `key=value` overrides into pydantic models.

Config classes subclass `ConfigModel` (pydantic v2, frozen, unknown keys forbidden, numbers
finite). Unknown keys, wrong types, values outside a `Literal` or a bound are refused with a
message that names the dotted key and what is allowed, before any training starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import pydantic
import pydantic_core
import yaml

T = TypeVar("T", bound="ConfigModel")


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


class ConfigModel(pydantic.BaseModel):
    """Base of every config section: frozen, no unknown keys, no NaN or infinite numbers.

    A comma-separated string is accepted where a tuple is expected (`--set classes=0,3,7`).
    `true`/`false` are refused where a number is expected (`epochs=true` is not 1 epoch).
    """

    model_config = pydantic.ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True
    )

    @pydantic.field_validator("*", mode="before")
    @classmethod
    def _split_comma_lists(cls, value, info: pydantic.ValidationInfo):
        field = cls.model_fields.get(info.field_name)
        if field is None:
            return value
        if isinstance(value, str) and _accepts_tuple(field.annotation):
            return [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, bool) and _expects_number(field.annotation):
            raise pydantic_core.PydanticCustomError("number_not_bool", "a number, not a boolean")
        return value


def _expects_number(annotation) -> bool:
    options = get_args(annotation) if get_origin(annotation) is not None else (annotation,)
    return bool not in options and any(option in (int, float) for option in options)


def _accepts_tuple(annotation) -> bool:
    if get_origin(annotation) is tuple:
        return True
    return any(_accepts_tuple(a) for a in get_args(annotation) if get_origin(annotation))


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
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else (child or {})
            if not isinstance(child, dict):
                raise ConfigError(f"{part!r} is not a section. Received: {override!r}.")
            node = child
        node[parts[-1]] = value
    return data


def from_dict(cls: type[T], data: dict | None) -> T:
    """Validates `data` into config model `cls`; every problem becomes one `ConfigError`."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"Expected a mapping of config keys. Received: {data!r}.")
    try:
        # Merged over the defaults, so `teacher_model.width=2` keeps the recipe's other
        # teacher_model values instead of falling back to the section class's own defaults.
        return cls.model_validate(_merged(cls().model_dump(), data))
    except pydantic.ValidationError as error:
        raise ConfigError(_describe(cls, error.errors()[0])) from None


def _merged(defaults: dict, data: dict) -> dict:
    merged = dict(defaults)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            merged[key] = _merged(defaults[key], value)
        else:
            merged[key] = value
    return merged


def to_dict(config: ConfigModel) -> dict:
    """The plain-dict form of a config (tuples as lists), for YAML/JSON/MLflow."""
    return config.model_dump(mode="json")


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` to `{"a.b": 1}`."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check(condition: bool, key: str, expected: str, value) -> None:
    """Raises `ConfigError` naming `key` when `condition` is false (for model validators)."""
    if not condition:
        raise ConfigError(f"Expected {key} {expected}. Received: {key}={value!r}.")


# === Error messages ===

_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
    "model": "a mapping",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _describe(cls: type[ConfigModel], error: dict) -> str:
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    key = ".".join(loc) or "the config"
    kind, value, context = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        section = _section(cls, loc[:-1])
        allowed = ", ".join(sorted(section.model_fields)) if section else "?"
        under = f" under {'.'.join(loc[:-1])}" if len(loc) > 1 else ""
        return (
            f"Unknown config key '{key}'. Allowed keys{under}: {allowed}. "
            f"Received: {key}={value!r}."
        )
    if kind == "number_not_bool":
        return f"Expected a number for {key}, not true or false. Received: {key}={value!r}."
    if kind == "value_error" and "error" in context:
        return str(context["error"])
    if kind in ("literal_error", "enum"):
        allowed = str(context.get("expected", "")).replace(" or ", ", ")
        return f"Invalid value for {key}. Allowed values: {allowed}. Received: {key}={value!r}."
    if kind in _BOUNDS:
        bound = next(iter(context.values()))
        shown = f"{bound:g}" if isinstance(bound, int | float) else bound
        return f"Expected {key} {_BOUNDS[kind]} {shown}. Received: {key}={value!r}."
    if kind == "finite_number":
        return f"Expected a finite number for {key}. Received: {key}={value!r}."
    for name, expected in _EXPECTED.items():
        if kind.startswith(name):
            return f"Expected {expected} for {key}. Received: {key}={value!r}."
    return f"Invalid value for {key}: {error['msg']}. Received: {key}={value!r}."


def _section(cls: type[ConfigModel], path: list[str]) -> type[ConfigModel] | None:
    section = cls
    for part in path:
        field = section.model_fields.get(part)
        if field is None:
            return None
        candidates = [field.annotation, *get_args(field.annotation)]
        section = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, ConfigModel)), None
        )
        if section is None:
            return None
    return section


__all__ = [
    "ConfigError",
    "ConfigModel",
    "apply_overrides",
    "check",
    "flatten",
    "from_dict",
    "load_yaml",
    "to_dict",
]
