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
Within :func:`builtin_deadline`, a builtin that would run past the evaluation's deadline
raises :class:`TimeoutError` instead (the evaluation fails as a ``timeout``).

Why one module: the host builtins are one table, with the refusal rules beside the builtins
they refuse; split by family, a builtin could be added without its refusal.

Example:
    ```python
    from langchain_opa_guard.engines.wasm.host_builtins import HOST_BUILTINS, go_sprintf

    assert go_sprintf("%s has %d roles", ["ann", 2]) == "ann has 2 roles"
    assert "sprintf" in HOST_BUILTINS
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

from langchain_opa_guard.engines.wasm.go_regexp import GoRegexpUnsupported, compile_go
from langchain_opa_guard.engines.wasm.rego_values import Number, RegoSet, go_quote, rego_string

__all__ = [
    "HOST_BUILTINS",
    "BuiltinRefusedError",
    "UnsupportedBuiltinError",
    "builtin_deadline",
    "check_builtins",
    "go_sprintf",
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


# -- sprintf, as Go's fmt.Sprintf formats OPA's arguments -----------------------------------


def _go_arg(value: Any) -> tuple[str, Any]:
    """How OPA hands a Rego value to fmt.Sprintf: (Go type name, Python value)."""
    if isinstance(value, Number):
        text = str(value)
        if any(c in text for c in ".eE"):
            return "float64", float(text)
        number = int(text)
        if -(2**63) <= number < 2**63:
            return "int64", number
        return "*big.Int", number
    if isinstance(value, bool) or value is None:
        return "string", rego_string(value)
    if isinstance(value, int):
        return "int64", value
    if isinstance(value, float):
        return "float64", value
    if isinstance(value, str):
        return "string", value
    return "string", rego_string(value)


_SPEC = re.compile(r"%([-+# 0]*)(\[\d+\])?(\d+|\*)?(?:\.(\d*))?(.)?", re.DOTALL)


def go_sprintf(format_string: str, values: list[Any]) -> str:
    """Go's ``fmt.Sprintf`` over Rego values, as OPA's ``sprintf`` builtin calls it.

    Covers the flags ``-+# 0``, width, precision, explicit argument indexes and the
    verbs ``v s d q x X o O b c U e E f F g G t %``; a mismatched verb, a missing or an
    extra argument is rendered the way Go renders it (``%!d(string=x)``, ...).
    """
    args = [_go_arg(v) for v in values]
    out: list[str] = []
    pos = 0
    index = 0
    reordered = False
    while True:
        start = format_string.find("%", pos)
        if start < 0:
            out.append(format_string[pos:])
            break
        out.append(format_string[pos:start])
        match = _SPEC.match(format_string, start)
        assert match is not None
        flags, explicit, width_text, precision_text, verb = match.groups()
        pos = match.end()
        if verb is None:
            out.append("%!(NOVERB)")
            break
        if verb == "%":
            out.append("%")
            continue
        if explicit:
            index = int(explicit[1:-1]) - 1
            reordered = True
            if index < 0:
                out.append(f"%!{verb}(BADINDEX)")
                continue
        width = None
        if width_text == "*":
            if index >= len(args) or args[index][0] != "int64":
                out.append("%!(BADWIDTH)")
                index += 1
            else:
                width = int(args[index][1])
                index += 1
        elif width_text:
            width = int(width_text)
        precision = None if precision_text is None else int(precision_text or "0")
        if index >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        kind, arg = args[index]
        index += 1
        out.append(_format_one(kind, arg, verb, flags, width, precision))
    if not reordered and index < len(args):
        extra = ", ".join(f"{k}={_plain(k, a)}" for k, a in args[index:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _plain(kind: str, value: Any) -> str:
    if kind == "float64":
        return _float_g(value, None, "g")
    return str(value)


def _format_one(
    kind: str, arg: Any, verb: str, flags: str, width: int | None, precision: int | None
) -> str:
    minus, plus, sharp, space, zero = (f in flags for f in "-+# 0")
    body: str | None
    if kind in ("int64", "*big.Int"):
        body = _format_int(arg, verb, plus, sharp, space, precision)
        if body is None and kind == "*big.Int" and verb == "s":
            body = str(arg)
        numeric = True
    elif kind == "float64":
        body = _format_float(arg, verb, plus, sharp, space, precision)
        numeric = True
    else:
        body = _format_str(arg, verb, plus, sharp, space, precision)
        numeric = False
    if body is None:  # Go prints the value with %v and the same flags, width, precision
        return f"%!{verb}({kind}={_format_one(kind, arg, 'v', flags, width, precision)})"
    if width is None or len(body) >= width:
        return body
    pad = width - len(body)
    if minus:
        return body + " " * pad
    if zero and (not numeric or precision is None or kind == "float64"):
        if numeric and body[:1] in "+- ":
            return body[0] + "0" * pad + body[1:]
        return "0" * pad + body
    return " " * pad + body


def _sign(negative: bool, plus: bool, space: bool) -> str:
    return "-" if negative else "+" if plus else " " if space else ""


def _format_int(
    value: int, verb: str, plus: bool, sharp: bool, space: bool, precision: int | None
) -> str | None:
    if verb == "c":
        return chr(value) if 0 <= value <= 0x10FFFF else "\ufffd"
    if verb == "q":
        return "'" + go_quote(chr(value) if 0 <= value <= 0x10FFFF else "\ufffd")[1:-1] + "'"
    if verb == "U":
        text = f"U+{value:04X}"
        if sharp and 0 <= value <= 0x10FFFF and chr(value).isprintable():
            text += f" '{chr(value)}'"
        return text
    bases = {"d": 10, "v": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}
    if verb not in bases:
        return None
    digits = {10: "{:d}", 2: "{:b}", 8: "{:o}", 16: "{:x}"}[bases[verb]].format(abs(value))
    if verb == "X":
        digits = digits.upper()
    if precision is not None:
        digits = "" if precision == 0 and value == 0 else digits.rjust(precision, "0")
    prefix = ""
    if verb == "O" or (sharp and verb == "o" and not digits.startswith("0")):
        prefix = "0o" if verb == "O" else "0"
    elif sharp and verb in "xX":
        prefix = "0x" if verb == "x" else "0X"
    elif sharp and verb == "b":
        prefix = "0b"
    return _sign(value < 0, plus, space) + prefix + digits


def _shortest(value: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip, and the decimal point's position."""
    text = repr(abs(value))
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    if not digits:
        return "0", 1
    return digits, point


def _float_g(value: float, precision: int | None, verb: str) -> str:
    if precision is not None:
        text = f"{value:.{max(precision, 1)}{verb.lower()}}"
        return text.upper() if verb == "G" else text
    digits, point = _shortest(value)
    exponent = point - 1
    negative = "-" if value < 0 or (value == 0 and str(value).startswith("-")) else ""
    # Go's %v and shortest %g: exponent form when the exponent is < -4 or >= 6.
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        e = "e" if verb != "G" else "E"
        return f"{negative}{mantissa}{e}{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{negative}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return negative + digits + "0" * (point - len(digits))
    return f"{negative}{digits[:point]}.{digits[point:]}"


def _format_float(
    value: float, verb: str, plus: bool, sharp: bool, space: bool, precision: int | None
) -> str | None:
    if verb in "vgG":
        text = _float_g(value, precision, "g" if verb == "v" else verb)
    elif verb in "eE":
        text = f"{value:.{6 if precision is None else precision}{verb}}"
    elif verb in "fF":
        text = f"{value:.{6 if precision is None else precision}f}"
    else:
        return None
    if not text.startswith("-"):
        text = _sign(False, plus, space) + text
    return text


def _format_str(
    value: str, verb: str, plus: bool, sharp: bool, space: bool, precision: int | None
) -> str | None:
    if precision is not None and verb in "svqxX":
        value = value[:precision]
    if verb in "sv":
        return value
    if verb == "q":
        if plus:
            return "".join(
                c
                if c.isascii()
                else (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
                for c in go_quote(value)
            )
        if sharp and "`" not in value and all(c.isprintable() or c == "\t" for c in value):
            return f"`{value}`"
        return go_quote(value)
    if verb in "xX":
        raw = value.encode()
        pattern = "{:02x}" if verb == "x" else "{:02X}"
        parts = [pattern.format(b) for b in raw]
        if space:
            prefix = ("0x" if verb == "x" else "0X") if sharp else ""
            return " ".join(prefix + p for p in parts)
        return (("0x" if verb == "x" else "0X") if sharp and raw else "") + "".join(parts)
    return None


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
    return go_sprintf(format_string, args[1])


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
