"""Typed configuration: YAML files and ``--set key=value`` overrides checked against dataclasses.

A run configuration is any object whose ``sections()`` maps section names (``data``, ``train``,
``model``) to config dataclasses. Every key is checked against the dataclass field types; unknown
keys and values of the wrong type are errors naming the file (or ``--set``) and the key, never
silently ignored. An override names ``section.key`` or, when the name is unique across sections,
just ``key`` (``--set mode=con``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration key or value that does not fit the typed config."""


def _check_value(section: str, key: str, value: Any, annotation: Any) -> Any:
    """``value`` converted to ``annotation`` where that is lossless, else a ConfigError."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(section, key, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{section}.{key}: bad value {value!r}")
    if origin is list:  # e.g. list[int]: a YAML list, or one scalar meaning a list of one
        (item_type,) = typing.get_args(annotation)
        items = value if isinstance(value, list) else [value]
        return [_check_value(section, key, item, item_type) for item in items]
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{section}.{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{section}.{key}: unsupported field type {annotation!r}")
    raise ConfigError(f"{section}.{key}: expected {annotation.__name__}, got {value!r}")


def _update(section_name: str, section: Any, values: dict, source: str) -> None:
    hints = typing.get_type_hints(type(section))
    names = {f.name for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"{source}: unknown key '{section_name}.{key}' (known: {', '.join(sorted(names))})"
            )
        setattr(section, key, _check_value(section_name, key, value, hints[key]))


def read_config_file(config: Any, source: Path) -> None:
    """Apply a YAML file of sections (``data:``, ``train:``, ``model:`` ...) to ``config``, any
    object whose ``sections()`` maps section names to config dataclasses."""
    known = ", ".join(config.sections())
    try:
        loaded = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({err})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: expected a mapping with sections {known}")
    update_sections(config, loaded, str(source))


def update_sections(config: Any, values: dict, source: str) -> None:
    """Set ``{section: {key: value}}`` on ``config``, every key and value type-checked."""
    for section_name, section_values in values.items():
        if section_name not in config.sections():
            raise ConfigError(f"{source}: unknown section '{section_name}' (known: {', '.join(config.sections())})")
        if not isinstance(section_values, dict):
            raise ConfigError(f"{source}: section '{section_name}' must be a mapping")
        _update(section_name, config.sections()[section_name], section_values, source)


def apply_overrides(config: Any, overrides: list[str]) -> None:
    """Apply ``key=value`` strings; values are parsed as YAML scalars (``1e-4``, ``true``, ``null``)."""
    for item in overrides:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if "." in key:
            section_name, _, name = key.partition(".")
            if section_name not in config.sections():
                raise ConfigError(f"--set {item!r}: unknown section '{section_name}'")
        else:
            owners = [s for s, sec in config.sections().items() if key in {f.name for f in dataclasses.fields(sec)}]
            if not owners:
                raise ConfigError(f"--set {item!r}: unknown key '{key}'")
            if len(owners) > 1:
                raise ConfigError(f"--set {item!r}: '{key}' is in several sections, write one of "
                                  + ", ".join(f"{o}.{key}" for o in owners))
            section_name, name = owners[0], key
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        _update(section_name, config.sections()[section_name], {name: value}, f"--set {item!r}")


def load_layers(config: Any, packaged: Path | None, path: str | Path | None, overrides: list[str]) -> Any:
    """``config`` (dataclass defaults), then the packaged YAML (if it exists), then the user's
    ``path`` (an error if it does not exist), then ``overrides``; returns ``config``."""
    if packaged is not None and packaged.is_file():
        read_config_file(config, packaged)
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: config file not found")
        read_config_file(config, Path(path))
    apply_overrides(config, overrides)
    return config
