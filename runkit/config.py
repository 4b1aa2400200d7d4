"""Strict YAML <-> dataclass configs shared by every package (``runkit.config``).

A config is a tree of ``@dataclass`` classes (one per component, a docstring per field). YAML is
read *through* the dataclass: an unknown or misspelled key is an error naming the file, the dotted
key and the closest valid name; values are type-checked and coerced where lossless (int -> float,
list -> tuple). Command-line overrides use the same path (``key.sub=value``, value parsed as YAML).
Cross-field checks live in each dataclass's ``__post_init__``.

Hand-written rather than OmegaConf's structured configs because we want (a) "did you mean"
suggestions with the file named, (b) tuples/Path/Literal fields, and (c) frozen plain dataclasses
with no library types leaking into the rest of the code.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from runkit.atomic import atomic_write_text

__all__ = ["ConfigError", "load_config", "from_dict", "to_dict", "save_config", "apply_overrides"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not match its dataclass (unknown key, wrong type, bad value)."""


def _suggest(key: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(sorted(options))})"


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Path and isinstance(value, str):
        return Path(value)
    if isinstance(tp, type):
        if tp is bool and not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        if tp in (int, float) and isinstance(value, bool):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a nested dict, strictly (unknown keys and bad types raise)."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}'{_suggest(str(key), fields)}")
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from None


def to_dict(cfg: Any) -> Any:
    """Plain-Python (YAML/JSON-safe) view of a config dataclass."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def apply_overrides(data: dict, overrides: Iterable[str], where: str = "override") -> dict:
    """Apply ``a.b=value`` strings (value parsed as YAML) to a nested dict, returning a new dict."""
    data = json.loads(json.dumps(data, default=str))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{where}: '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: '{key}' goes through a non-mapping value")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Defaults of ``cls``, updated by a YAML file and then by ``key=value`` overrides; strict.

    Args:
        cls: the config dataclass (every field must have a default).
        path: optional YAML file; its keys must all be fields of ``cls`` (recursively).
        overrides: ``dotted.key=value`` strings, e.g. from ``--set`` on the command line.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: naming the file and dotted key of the first problem.
    """
    data: dict = to_dict(cls())
    where = "config"
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        from_dict(cls, _merge(data, loaded), where=str(path))  # strict check of the file's own keys
        data = _merge(data, loaded)
        where = str(path)
    data = apply_overrides(data, overrides)
    return from_dict(cls, data, where=where)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML next to a run's outputs (atomically)."""
    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
