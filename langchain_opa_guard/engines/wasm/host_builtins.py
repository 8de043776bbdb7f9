"""The builtins a compiled policy module needs from its host, and which ones are refused.

OPA compiles most builtins into the module itself; a few it leaves to the host
(``sprintf``, hashing, URL and hex encoding, ...), listed by the module's ``builtins``
export. This module implements the ones whose OPA semantics Python can reproduce exactly
and refuses the others at load (``http.send``, ``net.*``, ``opa.runtime``, random and time
functions, ...), naming each refused builtin and the policy lines that call it: a policy
that cannot be evaluated faithfully is an error at start-up, not a surprise at run time.

As in OPA (without ``strict-builtin-errors``), a builtin that fails makes its expression
undefined. ``regex.find_n`` and ``regex.replace`` read Go's RE2 syntax through
:mod:`langchain_opa_guard.engines.wasm.go_regexp`; a pattern Go accepts but Python cannot match
the same way (``\\p{Greek}``, ``(a*)+``) is refused: at load when it is a constant in the policy
(:class:`UnsupportedBuiltinError`), else the evaluation fails closed
(:class:`BuiltinRefusedError` -> ``engine_error``). ``indexof_n`` counts code points, as OPA.
``sprintf`` is :mod:`langchain_opa_guard.engines.wasm.go_format`'s port of Go's fmt; what it
refuses fails the evaluation closed.
Within :func:`builtin_deadline`, a builtin that would run past the evaluation's deadline
raises :class:`TimeoutError` instead (the evaluation fails as a ``timeout``).

Why one module: the host builtins are one table, with the refusal rules beside the builtins
they refuse; split by family, a builtin could be added without its refusal.

Example:
    ```python
    from langchain_opa_guard.engines.wasm.host_builtins import HOST_BUILTINS

    assert HOST_BUILTINS["sprintf"](["%s has %d roles", ["ann", 2]]) == "ann has 2 roles"
    ```
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_opa_guard.engines.wasm.go_format import GoFormatRefused, go_sprintf
from langchain_opa_guard.engines.wasm.go_regexp import GoRegexpUnsupported, compile_go
from langchain_opa_guard.engines.wasm.rego_values import Number, RegoSet

__all__ = [
    "HOST_BUILTINS",
    "BuiltinRefusedError",
    "UnsupportedBuiltinError",
    "builtin_deadline",
    "check_builtins",
]


class UnsupportedBuiltinError(ValueError):
    """The policy calls builtins the embedded engine cannot provide (``http.send``, ...)."""


class BuiltinRefusedError(Exception):
    """A builtin call that the host cannot evaluate as OPA would (a regex pattern using
    ``\\p{Greek}``, say): the whole evaluation fails, closed, instead of going on with a
    value OPA would not have given."""


# -- the evaluation's deadline --------------------------------------------------------------

_DEADLINE: ContextVar[float | None] = ContextVar("opa_guard_builtin_deadline", default=None)


@contextmanager
def builtin_deadline(deadline: float) -> Iterator[None]:
    """Within this block, host builtins stop with :class:`TimeoutError` once
    ``time.monotonic()`` passes ``deadline`` (checked before a builtin starts and inside
    its loops). The wasm runtime sets it around each builtin call of an evaluation."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _deadline() -> float | None:
    """The deadline in force, after checking it has not passed.

    Raises:
        TimeoutError: It has passed.
    """
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError("the evaluation's deadline passed")
    return deadline


# -- the other host builtins ----------------------------------------------------------------


def _string_arg(value: Any) -> str:
    if not isinstance(value, str) or isinstance(value, Number):
        raise TypeError("operand must be a string")
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str) and not isinstance(value, Number):
        return [value]
    if isinstance(value, (list, RegoSet)):
        return [_string_arg(v) for v in value]
    raise TypeError("operand must be a string, array or set of strings")


def _sprintf(args: list[Any]) -> str:
    format_string = _string_arg(args[0])
    if not isinstance(args[1], list):
        raise TypeError("operand 2 must be an array")
    try:
        return go_sprintf(format_string, args[1])
    except GoFormatRefused as exc:
        raise BuiltinRefusedError(f"sprintf: {exc}") from None


def _digest(name: str) -> Callable[[list[Any]], str]:
    def run(args: list[Any]) -> str:
        return hashlib.new(name, _string_arg(args[0]).encode()).hexdigest()

    return run


def _hmac(name: str) -> Callable[[list[Any]], str]:
    def run(args: list[Any]) -> str:
        message, key = _string_arg(args[0]).encode(), _string_arg(args[1]).encode()
        return hmac.new(key, message, name).hexdigest()

    return run


def _hmac_equal(args: list[Any]) -> bool:
    return hmac.compare_digest(_string_arg(args[0]).encode(), _string_arg(args[1]).encode())


def _any_prefix(args: list[Any]) -> bool:
    texts, prefixes = _strings(args[0]), _strings(args[1])
    return any(t.startswith(p) for t in texts for p in prefixes)


def _any_suffix(args: list[Any]) -> bool:
    texts, suffixes = _strings(args[0]), _strings(args[1])
    return any(t.endswith(s) for t in texts for s in suffixes)


def _hex_encode(args: list[Any]) -> str:
    return _string_arg(args[0]).encode().hex()


def _urlquery_encode(args: list[Any]) -> str:
    # Go's url.QueryEscape: space as "+", unreserved characters kept.
    return urllib.parse.quote_plus(_string_arg(args[0]), safe="-_.~")


_INTEGER_TEXT = re.compile(r"-?[0-9]+(?:\.0+)?")


def _int_arg(value: Any) -> int:
    """An integer operand as OPA's ``IntOperand`` reads it: ``2`` and ``2.0`` are, ``1e3``
    and ``2.5`` are not."""
    if not isinstance(value, Number) or not _INTEGER_TEXT.fullmatch(value):
        raise TypeError("operand must be an integer number")
    number = int(value.partition(".")[0])
    if not -(2**63) <= number < 2**63:
        raise ValueError("operand out of range")
    return number


def _indexof_n(args: list[Any]) -> list[int]:
    # OPA: every (overlapping) occurrence, as code point indexes.
    base, search = _string_arg(args[0]), _string_arg(args[1])
    if not search:
        raise ValueError("empty search character")
    deadline = _deadline()
    found = []
    index = base.find(search)
    while index >= 0:
        found.append(index)
        if deadline is not None and not len(found) & 0xFFF and time.monotonic() > deadline:
            raise TimeoutError("the evaluation's deadline passed")
        index = base.find(search, index + 1)
    return found


def _regexp(pattern: str) -> Any:
    try:
        return compile_go(pattern)
    except GoRegexpUnsupported as exc:
        raise BuiltinRefusedError(str(exc)) from None


def _regex_find_n(args: list[Any]) -> list[str]:
    pattern, text, n = _string_arg(args[0]), _string_arg(args[1]), _int_arg(args[2])
    return list(_regexp(pattern).find_all(text, n, _deadline()))


def _regex_replace(args: list[Any]) -> str:
    text, pattern, template = _string_arg(args[0]), _string_arg(args[1]), _string_arg(args[2])
    return str(_regexp(pattern).replace_all(text, template, _deadline()))


HOST_BUILTINS: Mapping[str, Callable[[list[Any]], Any]] = {
    "sprintf": _sprintf,
    "crypto.md5": _digest("md5"),
    "crypto.sha1": _digest("sha1"),
    "crypto.sha256": _digest("sha256"),
    "crypto.hmac.md5": _hmac("md5"),
    "crypto.hmac.sha1": _hmac("sha1"),
    "crypto.hmac.sha256": _hmac("sha256"),
    "crypto.hmac.sha512": _hmac("sha512"),
    "crypto.hmac.equal": _hmac_equal,
    "strings.any_prefix_match": _any_prefix,
    "strings.any_suffix_match": _any_suffix,
    "hex.encode": _hex_encode,
    "urlquery.encode": _urlquery_encode,
    "indexof_n": _indexof_n,
    "regex.find_n": _regex_find_n,
    "regex.replace": _regex_replace,
}
"""Builtins the embedded engine provides to compiled policies, by OPA name."""


def check_builtins(needed: Iterable[str], modules: Mapping[str, str]) -> None:
    """Refuse a policy module that needs builtins this host does not provide.

    Raises:
        UnsupportedBuiltinError: Naming each refused builtin and the policy lines that
            call it (``agent/egress.rego:12``), when the sources are at hand.
    """
    needed = set(needed)
    refused = sorted(needed - set(HOST_BUILTINS))
    if not refused:
        _check_patterns(needed, modules)
        return
    parts = []
    for name in refused:
        lines = _call_sites(name, modules)
        parts.append(f"{name} ({', '.join(lines)})" if lines else name)
    raise UnsupportedBuiltinError(
        "the embedded engine cannot evaluate builtins this policy calls: "
        + "; ".join(parts)
        + ". Evaluate this policy with an OPA server (OPAServer), or move these calls out "
        "of the decision path."
    )


def _call_sites(name: str, modules: Mapping[str, str]) -> list[str]:
    pattern = re.compile(r"(?<![\w.])" + re.escape(name) + r"\s*\(")
    found = []
    for file, source in sorted(modules.items()):
        for number, line in enumerate(source.splitlines(), start=1):
            code = line.split("#", 1)[0]
            if pattern.search(code):
                found.append(f"{file}:{number}")
    return found


# The regex builtins the host provides, and which argument is the pattern.
_PATTERN_ARGUMENT = {"regex.find_n": 0, "regex.replace": 1}


def _check_patterns(needed: set[str], modules: Mapping[str, str]) -> None:
    """Refuse constant patterns of host regex builtins that the host cannot reproduce
    (they would fail every evaluation that reaches them)."""
    problems = []
    for name, position in sorted(_PATTERN_ARGUMENT.items()):
        if name not in needed:
            continue
        for file, line, pattern in _literal_arguments(name, position, modules):
            try:
                compile_go(pattern)
            except GoRegexpUnsupported as exc:
                problems.append(f"{name} ({file}:{line}): {exc}")
            except ValueError:
                pass  # a pattern Go rejects too: undefined, as with OPA
    if problems:
        raise UnsupportedBuiltinError(
            "the embedded engine cannot evaluate these regular expressions as OPA does: "
            + "; ".join(problems)
            + ". Evaluate this policy with an OPA server (OPAServer), or rewrite the patterns."
        )


def _literal_arguments(
    name: str, position: int, modules: Mapping[str, str]
) -> list[tuple[str, int, str]]:
    """``(file, line, value)`` of each call of ``name`` whose argument at ``position`` is a
    string literal."""
    call = re.compile(r"(?<![\w.])" + re.escape(name) + r"\s*\(")
    found = []
    for file, source in sorted(modules.items()):
        for match in call.finditer(source):
            if _in_comment_or_string(source, match.start()):
                continue
            arguments = _split_arguments(source, match.end())
            if arguments is None or position >= len(arguments):
                continue
            value = _string_literal(arguments[position].strip())
            if value is not None:
                found.append((file, source.count("\n", 0, match.start()) + 1, value))
    return found


def _in_comment_or_string(source: str, index: int) -> bool:
    line_start = source.rfind("\n", 0, index) + 1
    i, quote = line_start, ""
    while i < index:
        c = source[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c in '"`':
            quote = c
        elif c == "#":
            return True
        i += 1
    return bool(quote)


def _split_arguments(source: str, start: int) -> list[str] | None:
    """The top-level arguments of a call whose ``(`` ends at ``start``."""
    arguments, depth, i, begin = [], 0, start, start
    while i < len(source):
        c = source[i]
        if c == '"':
            i += 1
            while i < len(source) and source[i] != '"':
                i += 2 if source[i] == "\\" else 1
        elif c == "`":
            i = source.find("`", i + 1)
            if i < 0:
                return None
        elif c == "#":
            i = source.find("\n", i)
            if i < 0:
                return None
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                arguments.append(source[begin:i])
                return arguments
            depth -= 1
        elif c == "," and depth == 0:
            arguments.append(source[begin:i])
            begin = i + 1
        i += 1
    return None


def _string_literal(text: str) -> str | None:
    if len(text) >= 2 and text[0] == text[-1] == "`" and "`" not in text[1:-1]:
        return text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, str) else None
    return None
