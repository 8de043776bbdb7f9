"""JSON through ``orjson`` where it gives what the standard library would mean, else nothing.

``orjson`` (a dependency of LangChain's own ``langsmith``) encodes and parses JSON several
times faster than :mod:`json`. It is used only where its answer is certain to carry the same
JSON values: :func:`plain_dumps` gives ``None`` for anything it would write differently from
:func:`json.dumps` in meaning (a subclass, a date, a dataclass, an integer past 64 bits, a
lone surrogate, a non-string key: it refuses those, and the caller takes the standard path)
and never lets a non-finite number pass as ``null``. :func:`loads` falls back to
:func:`json.loads` (``strict=False``) for any text ``orjson`` refuses or would read
otherwise (an integer past 64 bits).

Example:
    ```python
    plain_dumps({"a": [1, 2.5, None]})  # b'{"a":[1,2.5,null]}'
    plain_dumps({"a": float("nan")})  # None: the standard path decides
    plain_dumps({1: "x"})  # None
    ```
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["available", "loads", "plain_dumps"]

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


def available() -> bool:
    """Whether ``orjson`` is there (else every call here takes the standard path)."""
    return _orjson is not None


class _Refused(TypeError):
    pass


def _refuse(value: Any) -> Any:
    raise _Refused


def plain_dumps(value: Any, *, sort_keys: bool = False) -> bytes | None:
    """``value`` as compact UTF-8 JSON when it is plain JSON data (exact ``dict``, ``list``,
    ``tuple``, ``str``, ``int`` within 64 bits, finite ``float``, ``bool``, ``None``; string
    keys; no lone surrogates; nested less than 255 levels), else ``None``.

    Enums and UUIDs are written by value, as their JSON form; ``sort_keys`` sorts object
    keys (by code point).
    """
    if _orjson is None:
        return None
    try:
        text = _orjson.dumps(value, default=_refuse, option=_SORTED if sort_keys else _OPTIONS)
    except (_orjson.JSONEncodeError, _Refused, TypeError, RecursionError):
        return None
    # orjson writes NaN and the infinities as null: a text with null is kept only when it
    # reads back as the very value (NaN != None).
    if b"null" in text:
        try:
            if _orjson.loads(text) != value:
                return None
        except _orjson.JSONDecodeError:  # pragma: no cover - orjson reads its own text
            return None
    return text


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
