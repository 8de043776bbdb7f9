"""Python values as plain JSON: for the policy input, and for digests that must never
confuse two values.

:func:`jsonable` converts a value for a context document (nesting past :data:`MAX_DEPTH` cut
off with ``"..."``); :func:`whole_jsonable` never cuts (it raises :class:`NestingTooDeep`),
and :func:`arguments_problem` tells whether a tool call's arguments can be given to the
policy whole. :func:`canonical_json` and :func:`value_digest` are what grants, decided views
and MCP definition digests hash: the whole value, so two different values never share one.

Why one module: the conversions share one walk (``_plain``), and what the policy is shown,
what is refused before it is asked, and what a digest covers must follow the same rules; a
change to one belongs beside the others.

Example:
    ```python
    jsonable({"on": datetime.date(2026, 1, 2), "ids": {3, 1}})
    # {"on": "2026-01-02", "ids": [1, 3]}
    arguments_problem({"body": {"text": "hi"}})  # None: the policy sees them whole
    value_digest(["search", {"query": "opa"}])  # the SHA-256 of their canonical JSON
    ```
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

from langchain_opa_guard.fast_json import canonical_dumps

__all__ = [
    "BAD_TEXT",
    "DIGEST_DEPTH",
    "INEXACT",
    "KEYS_ALIKE",
    "MAX_DEPTH",
    "NON_FINITE",
    "TOO_DEEP",
    "NestingTooDeep",
    "arguments_problem",
    "canonical_json",
    "jsonable",
    "value_digest",
    "whole_jsonable",
]

MAX_DEPTH = 64
"""How deeply values may nest in the policy input. Context values nested deeper are cut off
with ``"..."`` (:func:`jsonable`); a tool call's arguments never are: a call whose arguments
nest deeper is refused before the policy is asked (:func:`arguments_problem`)."""

DIGEST_DEPTH = 256
"""How deeply a value may nest for a digest of it (:func:`canonical_json`) to cover it whole."""

TOO_DEEP = (
    f"the tool call's arguments are nested more than {MAX_DEPTH} levels deep, "
    "deeper than the policy input can hold, so the policy cannot decide them"
)
"""Why a call whose arguments nest deeper than :data:`MAX_DEPTH` is refused."""

NON_FINITE = (
    "the tool call's arguments hold a number that is not finite (infinity or NaN), "
    "which the policy input cannot carry as a number, so the policy cannot decide them"
)
"""Why a call whose arguments hold an infinite or NaN number (a float or a ``Decimal``) is
refused: the policy input would show it as a string (``"Infinity"``) while the tool runs
with the number."""

KEYS_ALIKE = (
    "the tool call's arguments hold an object whose keys read alike as text, which the "
    "policy input would merge, so the policy cannot decide every entry"
)
"""Why a call whose arguments hold a mapping with keys that are not all text and read alike
as text (``float("nan")`` twice, ``1`` and ``"1"``) is refused."""

INEXACT = (
    "the tool call's arguments hold a decimal number that a JSON number cannot carry "
    "exactly, so the policy would decide another number than the tool runs with"
)
"""Why a call whose arguments hold a ``Decimal`` no float equals (``100.00000000000000001``)
is refused: the policy input would show it rounded."""

BAD_TEXT = (
    "the tool call's arguments hold text that is not valid Unicode (a lone surrogate), "
    "which the policy input cannot carry as it is, so the policy cannot decide them"
)
"""Why a call whose arguments hold a string with a lone surrogate is refused: UTF-8 cannot
hold it, so the policy input would show the policy another text (``"?"`` in its place)
than the one the tool runs with."""

_MAX_DEPTH = MAX_DEPTH


class NestingTooDeep(ValueError):
    """A value nests deeper than a conversion that must keep it whole allows."""


class _NonFinite(ValueError):
    """A value holds a number JSON cannot carry (infinity, NaN)."""


class _Inexact(ValueError):
    """A value holds a decimal number that a JSON number (a float) cannot carry exactly."""


class _KeysAlike(ValueError):
    """A mapping holds keys that read alike as text (the policy input would merge them)."""


class _BadText(ValueError):
    """A value holds text UTF-8 cannot carry (a lone surrogate)."""


# Values that are their own JSON (no lone surrogates in ASCII text, finite numbers are
# checked below): kept as they are without a call.
_SCALARS = frozenset({bool, int, type(None)})


def jsonable(value: Any, _depth: int = 0) -> Any:
    """Convert ``value`` into plain JSON data (dict, list, str, int, float, bool, None).

    Non-finite floats become strings (``"NaN"``, ``"Infinity"``), lone surrogates in
    strings and keys ``"?"`` (UTF-8 cannot hold them), sets and tuples lists,
    dataclasses and pydantic models their fields, and anything else its ``str()``.
    Nesting deeper than 64 levels is cut off with ``"..."``: for context documents only;
    see :func:`whole_jsonable` for values that must never be cut.
    """
    # The common case first, by exact type: plain JSON from a model or a schema dump.
    kind = type(value)
    if kind is dict and _depth < _MAX_DEPTH:
        return {
            k if type(k) is str and k.isascii() else _text_key(k): v
            if type(v) in _SCALARS
            else jsonable(v, _depth + 1)
            for k, v in value.items()
        }
    if kind is list and _depth < _MAX_DEPTH:
        return [v if type(v) in _SCALARS else jsonable(v, _depth + 1) for v in value]
    if kind is str:
        try:
            value.encode()
        except UnicodeEncodeError:  # lone surrogates (JSON can carry "\ud800"): as "?"
            return value.encode("utf-8", "replace").decode()
        return value
    return _plain(value, _depth, _MAX_DEPTH, False)


def whole_jsonable(value: Any, limit: int = MAX_DEPTH) -> Any:
    """:func:`jsonable`, never cut: a value nested deeper than ``limit`` levels raises.

    Raises:
        NestingTooDeep: ``value`` nests deeper than ``limit`` (where :func:`jsonable`
            would put ``"..."``).

    Example:
        ```python
        whole_jsonable({"a": [1, {"b": 2}]})  # {"a": [1, {"b": 2}]}
        ```
    """
    return _plain(value, 0, limit, True)


def arguments_problem(args: Any) -> str | None:
    """Why a call's arguments cannot be given to the policy whole, or ``None`` when they
    can: nested deeper than :data:`MAX_DEPTH` (:data:`TOO_DEEP`), holding a number JSON
    cannot carry, infinity or NaN (:data:`NON_FINITE`; :func:`jsonable` would show the
    policy a string where the tool runs with the number), or text with a lone surrogate,
    in a value or a key (:data:`BAD_TEXT`; the policy would read ``"?"`` where the tool runs
    with the text, or could not be given the key at all), or a ``Decimal`` no float equals
    (:data:`INEXACT`; the policy would read it rounded).

    Example:
        ```python
        arguments_problem({"body": {"text": "hi"}})  # None
        arguments_problem({"amount": float("inf")})  # NON_FINITE
        ```
    """
    try:
        return None if _fits(args, 0) else TOO_DEEP
    except _NonFinite:
        return NON_FINITE
    except _BadText:
        return BAD_TEXT
    except _Inexact:
        return INEXACT
    except _KeysAlike:
        return KEYS_ALIKE


_FLAT = frozenset({bool, int, type(None)})


def _fits(value: Any, depth: int) -> bool:
    """Whether :func:`jsonable` keeps ``value`` (at ``depth``) whole: plain JSON walked
    without copying it, anything else converted as :func:`whole_jsonable` would.

    Raises:
        _NonFinite: ``value`` holds an infinite or NaN number.
        _BadText: ``value`` holds a string with a lone surrogate (a key too).
    """
    kind = type(value)
    if kind is dict:
        if depth >= _MAX_DEPTH:
            return False
        text_keys = True
        for k, v in value.items():
            if type(k) is not str or not k.isascii():
                _key_fits(k)
                text_keys = text_keys and isinstance(k, str)
            if not (type(v) in _FLAT or (type(v) is str and v.isascii()) or _fits(v, depth + 1)):
                return False
        if not text_keys:
            _distinct_keys(value)
        return True
    if kind is list:
        return depth < _MAX_DEPTH and all(
            type(v) in _FLAT or (type(v) is str and v.isascii()) or _fits(v, depth + 1)
            for v in value
        )
    if kind in _FLAT:
        return True
    if kind is str:
        _check_text(value)
        return True
    if kind is float:
        if math.isfinite(value):
            return True
        raise _NonFinite
    try:
        _plain(value, depth, _MAX_DEPTH, True, finite=True)
    except NestingTooDeep:
        return False
    return True


def _text_key(key: Any) -> str:
    """An object key as :func:`jsonable` writes it: as text, lone surrogates as ``"?"``."""
    text = _key(key)
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()
    return text


_MISSING: Any = object()


def _held(value: Any) -> Any:
    """What a Pydantic model (every field and extra) or a secret holds, else ``_MISSING``."""
    secret = getattr(value, "get_secret_value", None)
    if callable(secret):
        return secret()
    fields = getattr(type(value), "model_fields", None)
    if isinstance(fields, Mapping):  # Pydantic v2
        held = {name: getattr(value, name) for name in fields}
        held.update(getattr(value, "__pydantic_extra__", None) or {})
        return held
    if isinstance(getattr(type(value), "__fields__", None), Mapping):  # pydantic.v1
        return dict(value.__dict__)
    return _MISSING


def _key_fits(key: Any) -> bool:
    if isinstance(key, str):
        _check_text(key)
    elif not _finite_number(key):
        raise _NonFinite
    return True


def _finite_number(value: Any) -> bool:
    """``False`` for an infinite or NaN float or ``Decimal``; ``True`` for anything else."""
    if isinstance(value, float):
        return math.isfinite(value)
    return not isinstance(value, decimal.Decimal) or value.is_finite()


def _distinct_keys(mapping: Mapping[Any, Any]) -> None:
    """Keys that are not all text must stay apart as text (NaN and nan would not)."""
    if len({_text_key(k) for k in mapping}) != len(mapping):
        raise _KeysAlike


def _key(key: Any) -> str:
    """An object key as text: a str subclass by its own text (not its ``__str__``)."""
    return str.__str__(key) if isinstance(key, str) else str(key)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise _BadText from None


def canonical_json(value: Any) -> bytes:
    """``value`` as the canonical JSON a digest is taken of: whole (never cut), sorted keys,
    no whitespace, UTF-8 (a lone surrogate, which UTF-8 cannot hold, kept as its own bytes),
    so two different values never give the same text.

    Raises:
        NestingTooDeep: ``value`` nests deeper than :data:`DIGEST_DEPTH` levels.

    Example:
        ```python
        canonical_json({"b": 1, "a": "é"})  # b'{"a":"\xc3\xa9","b":1}'
        ```
    """
    text = json.dumps(
        _plain(value, 0, DIGEST_DEPTH, True, True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return text.encode("utf-8", "surrogatepass")


def value_digest(value: Any) -> str:
    """The SHA-256 (hex) of :func:`canonical_json` of ``value`` (taken through
    :func:`~langchain_opa_guard.fast_json.canonical_dumps` when that gives the same bytes
    faster). A value too deep to take whole gets a
    digest of its own that nothing else has (random, never equal to another digest, its
    own included), so a check that compares digests refuses it.

    Example:
        ```python
        value_digest(["search", {"query": "opa"}])  # '5d1c...'
        ```
    """
    # Plain JSON without floats (the common case) is written by orjson in one C call,
    # byte for byte what canonical_json writes: one digest for a value on either path.
    text = canonical_dumps(value)
    if text is None:
        try:
            text = canonical_json(value)
        except (NestingTooDeep, RecursionError):
            return "unmatched:" + uuid.uuid4().hex
    return hashlib.sha256(text).hexdigest()


def _plain(
    value: Any, _depth: int, limit: int, whole: bool, raw: bool = False, finite: bool = False
) -> Any:
    """:func:`jsonable` with its limit; ``whole``: raise past it instead of cutting;
    ``raw``: strings as they are (lone surrogates too); ``finite``: raise
    :class:`_NonFinite` at an infinite or NaN number instead of writing it as a string,
    :class:`_BadText` at a lone surrogate instead of writing ``"?"``, and :class:`_Inexact`
    at a ``Decimal`` no float equals (written as a float, or as its text when ``raw``)."""
    # The common case first, by exact type: plain JSON from a model or a schema dump.
    kind = type(value)
    if kind is dict and _depth < limit:
        if finite:
            for k in value:
                _key_fits(k)
            _distinct_keys(value)
        key_of = _key if raw else _text_key
        return {
            k if type(k) is str and (raw or k.isascii()) else key_of(k): v
            if type(v) in _SCALARS
            else _plain(v, _depth + 1, limit, whole, raw, finite)
            for k, v in value.items()
        }
    if kind is list and _depth < limit:
        return [
            v if type(v) in _SCALARS else _plain(v, _depth + 1, limit, whole, raw, finite)
            for v in value
        ]
    # A subclass of str, int or float (an IntEnum member, a str enum) is its own text or
    # number, as json.dumps, Pydantic and the tool read it (never its enum value).
    if isinstance(value, str):
        if type(value) is not str:
            value = str.__str__(value)
        if raw:
            return value
        try:
            value.encode()
        except UnicodeEncodeError:  # lone surrogates (JSON can carry "\ud800"): as "?"
            if finite:
                raise _BadText from None
            return value.encode("utf-8", "replace").decode()
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if type(value) is int else int.__int__(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value if type(value) is float else float.__float__(value)
        if finite:
            raise _NonFinite
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, decimal.Decimal):  # money: a number, as a policy compares it
        if not value.is_finite():
            if finite:
                raise _NonFinite
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        number = float(value)
        if decimal.Decimal(repr(number)) == value:
            return number
        # A float cannot carry it (100.00000000000000001 would read as 100.0).
        if finite:
            raise _Inexact
        return str(value) if raw else number
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value, _depth + 1, limit, whole, raw, finite)
    if _depth >= limit:
        if whole:
            raise NestingTooDeep(f"nested more than {limit} levels deep")
        return "..."
    if isinstance(value, Mapping):
        if finite:
            for k in value:
                _key_fits(k)
            _distinct_keys(value)
        key_of = _key if raw else _text_key
        return {
            key_of(k): _plain(v, _depth + 1, limit, whole, raw, finite) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v, _depth + 1, limit, whole, raw, finite) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_plain(v, _depth + 1, limit, whole, raw, finite) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(
            {f.name: getattr(value, f.name) for f in dataclasses.fields(value)},
            _depth + 1,
            limit,
            whole,
            raw,
            finite,
        )
    if raw and (whole_value := _held(value)) is not _MISSING:
        # A digest covers what a model or a secret holds, not its dump or its mask.
        return _plain(whole_value, _depth + 1, limit, whole, raw, finite)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            dumped = dump(mode="json")
        except Exception:  # noqa: BLE001 - fall back to the text form
            pass
        else:
            return _plain(dumped, _depth + 1, limit, whole, raw, finite)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape" if raw else "replace")
    return str(value)
