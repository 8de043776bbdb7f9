"""Rego values as the host builtins see them: read from OPA's value syntax, written back.

OPA's WebAssembly runtime hands a host builtin its arguments as values in its own memory;
``opa_value_dump`` renders one in Rego's literal syntax (JSON plus sets such as
``{1, 2}`` and ``set()``, and non-string object keys). :func:`parse_value` reads that
into Python: numbers keep their text (:class:`Number`), sets become :class:`RegoSet`.
:func:`dump_value` writes a result back in the same syntax, and :func:`rego_string`
renders a value the way OPA's Go code prints it (``sprintf``'s ``%v`` of a compound value).

Example:
    ```python
    from langchain_opa_guard.engines.wasm.rego_values import parse_value, rego_string

    value = parse_value(b'{"a":[1,2.5],"s":{"x"}}')
    assert rego_string(value) == '{"a": [1, 2.5], "s": {"x"}}'
    ```
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "Number",
    "RegoSet",
    "dump_value",
    "go_quote",
    "opa_sort_key",
    "parse_value",
    "rego_string",
    "to_json",
]


class Number(str):
    """A Rego number, kept as the text OPA holds (``1``, ``2.50``, ``1e3``)."""

    __slots__ = ()


class RegoSet(tuple):  # type: ignore[type-arg]
    """A Rego set: its members, in the order OPA printed them."""

    __slots__ = ()


class _Key(tuple):  # type: ignore[type-arg]
    """A compound object key (an array, object or set), made hashable."""

    __slots__ = ()


_WS = b" \t\r\n"


class _Reader:
    def __init__(self, text: bytes) -> None:
        self.text = text
        self.pos = 0

    def error(self) -> ValueError:
        return ValueError(f"unreadable Rego value at offset {self.pos}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def peek(self) -> int:
        self.skip()
        if self.pos >= len(self.text):
            raise self.error()
        return self.text[self.pos]

    def value(self) -> Any:
        c = self.peek()
        if c == ord("{"):
            return self.braces()
        if c == ord("["):
            self.pos += 1
            items: list[Any] = []
            if self.peek() == ord("]"):
                self.pos += 1
                return items
            while True:
                items.append(self.value())
                c = self.peek()
                self.pos += 1
                if c == ord("]"):
                    return items
                if c != ord(","):
                    raise self.error()
        if c == ord('"'):
            return self.string()
        for word, result in ((b"set()", RegoSet()), (b"true", True), (b"false", False)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        if self.text.startswith(b"null", self.pos):
            self.pos += 4
            return None
        return self.number()

    def string(self) -> str:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == ord("\\"):
                self.pos += 2
                continue
            self.pos += 1
            if c == ord('"'):
                return str(json.loads(self.text[start : self.pos], strict=False))
        raise self.error()

    def number(self) -> Number:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in b"+-.0123456789eE":
            self.pos += 1
        if start == self.pos:
            raise self.error()
        return Number(self.text[start : self.pos].decode())

    def braces(self) -> Any:
        self.pos += 1
        if self.peek() == ord("}"):
            self.pos += 1
            return {}
        first = self.value()
        if self.peek() == ord(":"):
            self.pos += 1
            obj: dict[Any, Any] = {_hashable(first): self.value()}
            while True:
                c = self.peek()
                self.pos += 1
                if c == ord("}"):
                    return obj
                if c != ord(","):
                    raise self.error()
                key = self.value()
                if self.peek() != ord(":"):
                    raise self.error()
                self.pos += 1
                obj[_hashable(key)] = self.value()
        members = [first]
        while True:
            c = self.peek()
            self.pos += 1
            if c == ord("}"):
                return RegoSet(members)
            if c != ord(","):
                raise self.error()
            members.append(self.value())


def _hashable(key: Any) -> Any:
    if isinstance(key, dict):
        return _Key(("object", *sorted(key.items(), key=repr)))
    if isinstance(key, list):
        return _Key(("array", *key))
    return key


def parse_value(text: bytes) -> Any:
    """Read a value in Rego's literal syntax (as ``opa_value_dump`` writes it).

    Raises:
        ValueError: The text is not a Rego value.
    """
    reader = _Reader(text)
    value = reader.value()
    reader.skip()
    if reader.pos != len(text.rstrip(b"\0")):
        raise reader.error()
    return value


def dump_value(value: Any) -> str:
    """Write a value in Rego's literal syntax (for ``opa_value_parse``)."""
    if isinstance(value, Number):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, RegoSet):
        return "{" + ",".join(dump_value(v) for v in value) + "}" if value else "set()"
    if isinstance(value, dict):
        return "{" + ",".join(f"{dump_value(k)}:{dump_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dump_value(v) for v in value) + "]"
    raise TypeError(f"not a Rego value: {type(value).__name__}")


def rego_string(value: Any) -> str:
    """A value as OPA's Go code prints it (``ast.Value.String()``)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Number):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, RegoSet):
        members = sorted(value, key=opa_sort_key)
        return "{" + ", ".join(rego_string(v) for v in members) + "}" if value else "set()"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: opa_sort_key(kv[0]))
        return "{" + ", ".join(f"{rego_string(k)}: {rego_string(v)}" for k, v in items) + "}"
    if isinstance(value, _Key):
        return rego_string(dict(value[1:]) if value[0] == "object" else list(value[1:]))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(rego_string(v) for v in value) + "]"
    return str(value)


_QUOTE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: printable characters as they are, the rest escaped."""
    out = ['"']
    for ch in text:
        escaped = _QUOTE_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch == " " or ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            if code < 0x80:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def opa_sort_key(value: Any) -> tuple[Any, ...]:
    """A sort key that orders values as OPA does (``ast.Compare``): null < booleans <
    numbers < strings < arrays < objects < sets, each compared by value."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, Number):
        return (2, float(value) if any(c in value for c in ".eE") else int(value))
    if isinstance(value, (int, float)):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, RegoSet):
        return (6, tuple(sorted(opa_sort_key(v) for v in value)))
    if isinstance(value, dict):
        # Key by key, each key then its value, a shorter object first when one is the
        # other's start (OPA's objectCompare); keys are unique, so pairs sort by key.
        return (5, tuple(sorted((opa_sort_key(k), opa_sort_key(v)) for k, v in value.items())))
    if isinstance(value, _Key):
        return opa_sort_key(dict(value[1:]) if value[0] == "object" else list(value[1:]))
    if isinstance(value, (list, tuple)):
        return (4, tuple(opa_sort_key(v) for v in value))
    return (7, repr(value))


def to_json(value: Any) -> Any:
    """A Rego value as OPA's JSON has it: sets as arrays in OPA's order, numbers as
    ``int``/``float``, non-string object keys as their JSON text."""
    if isinstance(value, Number):
        return float(value) if any(c in value for c in ".eE") else int(value)
    if isinstance(value, RegoSet):
        return [to_json(v) for v in sorted(value, key=opa_sort_key)]
    if isinstance(value, dict):
        return {
            (k if isinstance(k, str) else json.dumps(to_json(k), separators=(",", ":"))): to_json(v)
            for k, v in value.items()
        }
    if isinstance(value, _Key):
        return to_json(dict(value[1:]) if value[0] == "object" else list(value[1:]))
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value
