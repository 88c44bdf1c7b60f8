"""The coordinator's state and events as JSON, by their type hints, for the journal and its
snapshots. Decoding is strict: a value that does not have the declared type, shape or size is a
`PersistError`, never a half-built object (a journal on disk is as hostile as any input: a
restart must not accept a state different from the one written).

bytes -> {"hex": ...}; tuples, lists and frozensets -> lists; dicts -> lists of [key, value]
pairs (keys may be bytes or tuples); dataclasses -> objects; enums -> their values.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import sys
import types
import typing
from typing import Any

MAX_DEPTH = 12


class PersistError(ValueError):
    """A persisted value does not decode to its declared type."""


def encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return [[encode(k), encode(v)] for k, v in value.items()]
    if isinstance(value, tuple | list | frozenset | set):
        return [encode(v) for v in (sorted(value) if isinstance(value, frozenset | set) else value)]
    return value


def decode(data: Any, hint: Any, depth: int = 0) -> Any:
    """`data` (from `encode`, through JSON) as a value of type `hint`."""
    if depth > MAX_DEPTH:
        raise PersistError("nested too deep")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return data
    if origin in (types.UnionType, typing.Union):
        for option in args:
            try:
                return decode(data, option, depth + 1)
            except PersistError:
                continue
        raise PersistError(f"{_short(data)} is none of {hint}")
    if hint is type(None):
        return _expect(data is None, None, data, hint)
    if origin in (tuple, list, frozenset, set):
        items = _expect(isinstance(data, list), data, data, hint)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise PersistError(f"{hint} needs {len(args)} items, got {len(items)}")
            return tuple(decode(v, a, depth + 1) for v, a in zip(items, args))
        return origin(decode(v, args[0], depth + 1) for v in items)
    if origin is dict:
        pairs = _expect(isinstance(data, list), data, data, hint)
        out = {}
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise PersistError(f"a {hint} entry must be a [key, value] pair")
            out[decode(pair[0], args[0], depth + 1)] = decode(pair[1], args[1], depth + 1)
        return out
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(data)
        except ValueError:
            raise PersistError(f"{_short(data)} is not a {hint.__name__}") from None
    if dataclasses.is_dataclass(hint):
        return _dataclass(data, hint, depth)
    return _scalar(data, hint)


def _dataclass(data: Any, cls: type, depth: int) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(data, dict) or set(data) != names:
        raise PersistError(f"{cls.__name__} needs fields {sorted(names)}")
    hints = _hints(cls)
    return cls(**{name: decode(data[name], hints[name], depth + 1) for name in names})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


def _scalar(data: Any, hint: Any) -> Any:
    if hint is bytes:
        ok = isinstance(data, dict) and set(data) == {"hex"} and isinstance(data["hex"], str)
        try:
            return bytes.fromhex(data["hex"]) if ok else _fail(data, hint)
        except ValueError:
            raise PersistError("not hexadecimal") from None
    if hint is bool:
        return _expect(isinstance(data, bool), data, data, hint)
    if hint is int:
        return _expect(isinstance(data, int) and not isinstance(data, bool), data, data, hint)
    if hint is float:
        number = isinstance(data, int | float) and not isinstance(data, bool) and math.isfinite(data)
        return _expect(number, float(data) if number else None, data, hint)
    if hint is str:
        return _expect(isinstance(data, str), data, data, hint)
    raise PersistError(f"no decoder for {hint}")


def _expect(ok: bool, value: Any, data: Any, hint: Any) -> Any:
    return value if ok else _fail(data, hint)


def _fail(data: Any, hint: Any) -> Any:
    raise PersistError(f"{_short(data)} is not a {hint}")


def _short(data: Any) -> str:
    text = repr(data)
    return text if len(text) < 60 else text[:57] + "..."
