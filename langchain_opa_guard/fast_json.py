"""JSON through ``orjson`` where it gives what the standard library would mean, else nothing.

``orjson`` (a dependency of LangChain's own ``langsmith``) encodes and parses JSON several
times faster than :mod:`json`. It is used only where its answer is certain to carry the same
JSON values: :func:`plain_dumps` gives ``None`` for anything whose text would mean something
else than :func:`json.dumps` writes (an enum whose value is not its own int or text, a tuple,
a date, a subclass, an ``orjson.Fragment``, a non-finite number, a lone surrogate, an
integer past 64 bits), and the caller takes the standard path. :func:`canonical_dumps` gives
the very bytes of ``json.dumps(..., sort_keys=True, ensure_ascii=False)`` for values made of
the exact built-in types without floats (digests stay what they were). :func:`loads` falls
back to :func:`json.loads` (``strict=False``) for any text ``orjson`` refuses or would read
otherwise (an integer past 64 bits).

Example:
    ```python
    plain_dumps({"a": [1, 2.5, None]})  # b'{"a":[1,2.5,null]}'
    plain_dumps({"a": float("nan")})  # None: the standard path decides
    canonical_dumps({"b": 1, "a": ["x"]})  # b'{"a":["x"],"b":1}'
    canonical_dumps({"a": 0.5})  # None (floats keep the standard spelling)
    ```
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["available", "canonical_dumps", "loads", "plain_dumps", "value_key"]

try:  # pragma: no branch - orjson is installed wherever langsmith is
    import orjson as _orjson
except ImportError:  # pragma: no cover - PyPy, or a stripped environment
    _orjson = None  # type: ignore[assignment]

_OPTIONS = 0
_SORTED = 0
if _orjson is not None:
    # Everything but the exact built-in types goes to _refuse: subclasses (an int
    # subclass's text, a str subclass's), dates, dataclasses.
    _OPTIONS = (
        _orjson.OPT_PASSTHROUGH_SUBCLASS
        | _orjson.OPT_PASSTHROUGH_DATETIME
        | _orjson.OPT_PASSTHROUGH_DATACLASS
    )
    _SORTED = _OPTIONS | _orjson.OPT_SORT_KEYS

_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{19}")

_CANONICAL_DEPTH = 200
"""Deeper values take the standard path (orjson stops at 255 levels)."""


def available() -> bool:
    """Whether ``orjson`` is there (else every call here takes the standard path)."""
    return _orjson is not None


class _Refused(TypeError):
    pass


def _refuse(value: Any) -> Any:
    raise _Refused


def plain_dumps(value: Any) -> bytes | None:
    """``value`` as compact UTF-8 JSON (keys in their order) when orjson's text means what
    :func:`json.dumps` would write, else ``None``.

    The text is read back and must equal ``value``: orjson writes an enum by its value, a
    tuple as an array, NaN and the infinities as ``null`` and an ``orjson.Fragment`` as it
    is; none of those reads back equal. Exact built-in types only otherwise (a subclass, a
    date, a dataclass is refused before any text is written).
    """
    if _orjson is None:
        return None
    try:
        text = _orjson.dumps(value, default=_refuse, option=_OPTIONS)
        if _orjson.loads(text) != value:
            return None
    except (_Refused, TypeError, ValueError, RecursionError):  # JSONEncodeError, JSONDecodeError
        return None
    return text


def value_key(value: Any) -> bytes | str:
    """A key equal for two values read from JSON only when they are the same JSON, types
    included (``1``, ``1.0`` and ``true`` differ; objects with their keys in another order
    differ too): orjson's text, else ``repr`` (which tells those apart as well).

    Example:
        ```python
        value_key({"allow": True}) == value_key({"allow": True})  # True
        value_key(1) == value_key(1.0)  # False
        ```
    """
    if _orjson is not None:
        try:
            return _orjson.dumps(value)
        except (TypeError, _orjson.JSONEncodeError):  # a wide integer, a lone surrogate
            pass
    return repr(value)


def canonical_dumps(value: Any) -> bytes | None:
    """The canonical JSON of ``value`` (sorted keys, no whitespace, UTF-8) when it is made
    only of exact ``dict`` (string keys), ``list``, ``str``, ``int``, ``bool`` and ``None``,
    less than 200 levels deep; else ``None``.

    For such values orjson writes the very bytes ``json.dumps(value, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)`` does (strings are escaped alike, keys sort
    alike); floats are left out because the two spell some of them differently (``1e-07``).
    """
    if _orjson is None or not _exactly_plain(value, 0):
        return None
    try:
        return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS)
    except (TypeError, RecursionError):  # a lone surrogate, an integer past 64 bits
        return None


_LEAVES = frozenset({str, int, bool, type(None)})


def _exactly_plain(value: Any, depth: int) -> bool:
    # Loops rather than all() over a generator: this runs on every call digest.
    kind = type(value)
    if kind is dict:
        if depth >= _CANONICAL_DEPTH:
            return False
        for k, v in value.items():
            if type(k) is not str or (type(v) not in _LEAVES and not _exactly_plain(v, depth + 1)):
                return False
        return True
    if kind is list:
        if depth >= _CANONICAL_DEPTH:
            return False
        for v in value:  # noqa: SIM110 - a loop, not all() over a generator (see above)
            if type(v) not in _LEAVES and not _exactly_plain(v, depth + 1):
                return False
        return True
    return kind in _LEAVES


def loads(text: bytes | str) -> Any:
    """Parse JSON text as ``json.loads`` with ``strict=False`` does (control characters and
    lone surrogates inside strings allowed, integers of any size kept whole).

    Raises:
        ValueError: The text is not JSON.
    """
    # orjson reads an integer past 64 bits as a float: such text goes the standard way.
    long_digits = _LONG_DIGITS if isinstance(text, bytes) else _LONG_DIGITS_TEXT
    if _orjson is not None and long_digits.search(text) is None:  # type: ignore[arg-type]
        try:
            return _orjson.loads(text)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(text, strict=False)
