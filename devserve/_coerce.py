"""Turn raw option values (strings from the environment or the CLI, TOML values, Python objects
from ``run()``) into the types ``Config`` declares.

Kept apart from ``config.py`` so the type rules live in one place and can be tested alone. Every
failure is a ``CoerceError`` carrying only the message; the caller adds option name and source.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Sequence
from typing import Any, Literal, Union, get_args, get_origin

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NONE = frozenset({"none", ""})
# RFC 9110 token: the characters allowed in a header field name.
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class CoerceError(ValueError):
    """A value cannot be read as the expected type; ``str(err)`` is the user-facing reason."""


def coerce(value: object, hint: Any) -> Any:
    """Convert *value* to the type *hint* (a resolved annotation of a ``Config`` field)."""
    if hint is Any:
        return value
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        if len(args) != 1:
            raise TypeError(f"no coercion rule for {hint!r}")
        return coerce(value, args[0])
    if origin is Literal:
        return _literal(value, get_args(hint))
    if hint == tuple[tuple[str, str], ...]:
        return parse_headers(value)
    if hint == tuple[str, ...]:
        return _str_tuple(value)
    if hint is bool:
        return parse_bool(value)
    if hint is int:
        return _int(value)
    if hint is float:
        return _float(value)
    if hint is str:
        if not isinstance(value, str):
            raise CoerceError(f"expected a string, got {value!r}")
        return value
    raise TypeError(f"no coercion rule for {hint!r}")  # a new Config field type needs a rule


def parse_bool(value: object) -> bool:
    """Accept a real bool or the usual spellings (true/false, 1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise CoerceError(f"expected a boolean (true/false, 1/0, yes/no, on/off), got {value!r}")


def _int(value: object) -> int:
    if isinstance(value, bool):  # bool is an int subclass; `port = true` is a mistake
        raise CoerceError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise CoerceError(f"expected an integer, got {value!r}")


def _float(value: object) -> float:
    if isinstance(value, bool):
        raise CoerceError(f"expected a number, got {value!r}")
    number: float | None = None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise CoerceError(f"expected a number, got {value!r}")
    return number


def _literal(value: object, choices: tuple[Any, ...]) -> Any:
    text = value.strip().lower() if isinstance(value, str) else value
    if text in choices:
        return text
    raise CoerceError(f"expected one of {', '.join(map(str, choices))}, got {value!r}")


def _items(value: object) -> list[object]:
    """A comma-separated string or a list/tuple, as a list of items."""
    if isinstance(value, str):
        return list(value.split(","))
    if isinstance(value, Sequence):
        return list(value)
    raise CoerceError(f"expected a comma-separated string or a list, got {value!r}")


def _str_tuple(value: object) -> tuple[str, ...]:
    out: list[str] = []
    for item in _items(value):
        if not isinstance(item, str):
            raise CoerceError(f"expected strings, got {item!r}")
        if item.strip():
            out.append(item.strip())
    return tuple(out)


def parse_header(item: object) -> tuple[str, str]:
    """One header from ``"Name: value"`` or a ``(name, value)`` pair, checked for validity."""
    if isinstance(item, str):
        name, sep, val = item.partition(":")
        if not sep:
            raise CoerceError(f"expected 'Name: value', got {item!r}")
    elif (
        isinstance(item, Sequence) and len(item) == 2 and all(isinstance(p, str) for p in item)
    ):
        name, val = item[0], item[1]
    else:
        raise CoerceError(f"expected 'Name: value', got {item!r}")
    name, val = name.strip(), val.strip()
    if not HEADER_NAME_RE.match(name):
        raise CoerceError(f"{name!r} is not a valid header name (in {item!r})")
    if any(ch in val for ch in "\r\n\0"):
        raise CoerceError(f"header value must not contain CR, LF or NUL (in {item!r})")
    return name, val


def parse_headers(value: object) -> tuple[tuple[str, str], ...]:
    """Headers from a list of ``"Name: value"`` strings/pairs, or one comma-separated string
    (the environment form; use a TOML list for values that contain commas)."""
    items = [i for i in _items(value) if not (isinstance(i, str) and not i.strip())]
    return tuple(parse_header(i) for i in items)
