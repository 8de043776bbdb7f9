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
``sprintf`` is a port of Go's fmt for the arguments OPA hands it (``int64``, ``float64``,
``*big.Int``, ``string``); it refuses, failing the evaluation closed, ``%p`` and ``%w`` of a big
integer, a lone surrogate, and quoting a character new in Unicode 15 (Go's tables have it,
Python 3.11's do not).
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

import bisect
import hashlib
import hmac
import json
import math
import re
import struct
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_opa_guard.engines.wasm.go_regexp import GoRegexpUnsupported, compile_go
from langchain_opa_guard.engines.wasm.rego_values import Number, RegoSet, rego_string

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
#
# A port of Go's fmt (print.go's doPrintf and printArg, format.go), strconv's float and quote
# formats and math/big's Int.Format, for the four Go types OPA hands fmt.Sprintf: int64,
# float64, *big.Int and string. Go reads the format by bytes; its syntax is ASCII, so code
# points read the same here, and widths count runes as Go does.

_INT64 = "int64"
_FLOAT64 = "float64"
_BIG = "*big.Int"
_STRING = "string"
_MAX_RUNE = 0x10FFFF
_UINT64 = 2**64
_MANTISSA_BITS = 52
_TOO_LARGE = 1_000_000  # fmt's tooLarge: widths and precisions past it are not numbers
_SURROGATE = re.compile("[\ud800-\udfff]")

GoArg = tuple[str, Any]
"""An argument as fmt.Sprintf sees it: its Go type name and its value."""


def _go_number(text: str) -> GoArg:
    """A Rego number as OPA's ``builtinSprintf`` converts it: a float64 when its text has a
    fraction or an exponent (its text when float64 cannot hold it), else an int64, else a
    ``*big.Int``."""
    if any(c in text for c in ".eE"):
        value = float(text)
        return (_STRING, text) if math.isinf(value) else (_FLOAT64, value)
    number = int(text)
    return (_INT64, number) if -(2**63) <= number < 2**63 else (_BIG, number)


def _go_arg(value: Any) -> GoArg:
    """How OPA hands a Rego value to fmt.Sprintf; a compound value becomes its Rego text.

    Raises:
        BuiltinRefusedError: Its text would quote a character Python's Unicode tables do not
            know (:func:`_check_printable`).
    """
    if isinstance(value, Number) or (isinstance(value, int) and not isinstance(value, bool)):
        return _go_number(str(value))
    if isinstance(value, float):
        return _FLOAT64, value
    if isinstance(value, str):
        return _STRING, value
    for text in _texts(value):
        _check_printable(text)
    return _STRING, rego_string(value)


def _texts(value: Any) -> Iterator[str]:
    """Every string in a value, object keys and nested values included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)


def _check_printable(text: str) -> None:
    """Refuse text that Go's ``strconv.IsPrint`` may judge otherwise than Python does
    (:func:`_is_print` of each character, for the quotes of a compound value's text).

    Raises:
        BuiltinRefusedError: The text holds such a character.
    """
    if text.isascii() or (_PYTHON_UNICODE <= _GO_UNICODE and text.isprintable()):
        return
    for ch in text:
        if ch >= "\x80":
            _is_print(ch)


# Go's Unicode tables (Go 1.26, OPA 1.22's) are 15.0; Python's depend on its version.
_GO_UNICODE = (15, 0, 0)
_PYTHON_UNICODE = tuple(int(part) for part in unicodedata.unidata_version.split("."))

# The code points Go's strconv.IsPrint (Unicode 15.0) prints and Python 3.11's tables (14.0)
# leave unassigned: what Unicode 15.0 added, but its format characters. Checked against Go
# 1.26 for every code point; on every other code point the two agree.
_NEW_IN_15 = (
    (0xCF3, 0xCF3), (0xECE, 0xECE), (0x10EFD, 0x10EFF), (0x1123F, 0x11241),
    (0x11B00, 0x11B09), (0x11F00, 0x11F10), (0x11F12, 0x11F3A), (0x11F3E, 0x11F59),
    (0x1342F, 0x1342F), (0x13440, 0x13455), (0x1B132, 0x1B132), (0x1B155, 0x1B155),
    (0x1D2C0, 0x1D2D3), (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D), (0x1E08F, 0x1E08F),
    (0x1E4D0, 0x1E4F9), (0x1F6DC, 0x1F6DC), (0x1F774, 0x1F776), (0x1F77B, 0x1F77F),
    (0x1F7D9, 0x1F7D9), (0x1FA75, 0x1FA77), (0x1FA87, 0x1FA88), (0x1FAAD, 0x1FAAF),
    (0x1FABB, 0x1FABD), (0x1FABF, 0x1FABF), (0x1FACE, 0x1FACF), (0x1FADA, 0x1FADB),
    (0x1FAE8, 0x1FAE8), (0x1FAF7, 0x1FAF8), (0x2B739, 0x2B739), (0x31350, 0x323AF),
)  # fmt: skip
_NEW_IN_15_STARTS = [start for start, _ in _NEW_IN_15]


def _tables_may_differ(ch: str, printable: bool) -> bool:
    """Whether Go's ``IsPrint`` of a non-ASCII character may differ from Python's answer:
    exactly the code points of ``_NEW_IN_15`` with Python 3.11's tables, none with tables
    of Go's version; else, conservatively, any code point Python's older tables leave
    unassigned, or any that its newer tables print (it may be newer than Go's)."""
    if _PYTHON_UNICODE == (14, 0, 0):
        index = bisect.bisect_right(_NEW_IN_15_STARTS, ord(ch)) - 1
        return index >= 0 and ord(ch) <= _NEW_IN_15[index][1]
    if _PYTHON_UNICODE < _GO_UNICODE:
        return not printable and unicodedata.category(ch) == "Cn"
    return printable and _PYTHON_UNICODE > _GO_UNICODE


def go_sprintf(format_string: str, values: list[Any]) -> str:
    """Go's ``fmt.Sprintf`` over Rego values, as OPA's ``sprintf`` builtin calls it.

    Every verb, flag, width, precision (``*`` ones too) and argument index Go reads; a
    mismatched verb, a missing or an extra argument, a bad index is rendered as Go renders
    it (``%!d(string=x)``, ``%!d(BADINDEX)``, ...).

    Raises:
        BuiltinRefusedError: What Python cannot reproduce exactly: ``%p`` or ``%w`` of a big
            integer (Go prints its address or its words), text holding a surrogate, a
            quoted character new in Unicode 15 (Python 3.11's tables do not know it:
            :func:`_is_print`).
    """
    for text in (format_string, *_texts(values)):
        if _SURROGATE.search(text):
            raise BuiltinRefusedError("text holding a lone surrogate")
    return _Printer([_go_arg(v) for v in values]).printf(format_string)


class _Flags:
    """fmt's flags, width and precision for one verb (Go's ``fmtFlags``, ``wid``, ``prec``)."""

    __slots__ = (
        "minus",
        "plus",
        "plus_v",
        "prec",
        "prec_present",
        "sharp",
        "sharp_v",
        "space",
        "wid",
        "wid_present",
        "zero",
    )

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """No flags, width or precision (Go's ``clearflags``)."""
        self.minus = self.plus = self.sharp = self.space = self.zero = False
        self.plus_v = self.sharp_v = False
        self.wid_present = self.prec_present = False
        self.wid = self.prec = 0


class _Printer:
    """One ``fmt.Sprintf`` call: Go's ``pp`` over the converted arguments."""

    def __init__(self, args: list[GoArg]) -> None:
        self.args = args
        self.flags = _Flags()
        self.good_arg_num = True
        self.reordered = False

    def printf(self, form: str) -> str:
        """Go's ``doPrintf``."""
        out: list[str] = []
        end, arg_num, i = len(form), 0, 0
        flags = self.flags
        while i < end:
            self.good_arg_num = True
            start = i
            i = form.find("%", i)
            if i < 0:
                i = end
            out.append(form[start:i])
            if i >= end:
                break
            i += 1
            flags.clear()
            while i < end and form[i] in "#0+- ":
                setattr(flags, _FLAG_NAMES[form[i]], True)
                i += 1
            arg_num, i, after_index = self._arg_number(arg_num, form, i)
            if i < end and form[i] == "*":
                i += 1
                flags.wid, flags.wid_present, arg_num = self._int_from_arg(arg_num)
                if not flags.wid_present:
                    out.append("%!(BADWIDTH)")
                if flags.wid < 0:
                    flags.wid, flags.minus, flags.zero = -flags.wid, True, False
                after_index = False
            else:
                flags.wid, flags.wid_present, i = _parse_num(form, i, end)
                if after_index and flags.wid_present:  # "%[3]2d"
                    self.good_arg_num = False
            if i + 1 < end and form[i] == ".":
                i += 1
                if after_index:  # "%[3].2d"
                    self.good_arg_num = False
                arg_num, i, after_index = self._arg_number(arg_num, form, i)
                if i < end and form[i] == "*":
                    i += 1
                    flags.prec, flags.prec_present, arg_num = self._int_from_arg(arg_num)
                    if flags.prec < 0:
                        flags.prec, flags.prec_present = 0, False
                    if not flags.prec_present:
                        out.append("%!(BADPREC)")
                    after_index = False
                else:
                    flags.prec, flags.prec_present, i = _parse_num(form, i, end)
                    if not flags.prec_present:
                        flags.prec, flags.prec_present = 0, True
            if not after_index:
                arg_num, i, after_index = self._arg_number(arg_num, form, i)
            if i >= end:
                out.append("%!(NOVERB)")
                break
            verb = form[i]
            i += 1
            if verb == "%":  # absorbs no argument, ignores width and precision
                out.append("%")
            elif not self.good_arg_num:
                out.append(f"%!{verb}(BADINDEX)")
            elif arg_num >= len(self.args):
                out.append(f"%!{verb}(MISSING)")
            else:
                if verb in "vw":  # Go syntax (#) and struct-field syntax (+) for %v
                    flags.sharp_v, flags.sharp = flags.sharp, False
                    flags.plus_v, flags.plus = flags.plus, False
                out.append(self._print_arg(self.args[arg_num], verb))
                arg_num += 1
        if not self.reordered and arg_num < len(self.args):
            flags.clear()
            extra = ", ".join(f"{k}={self._print_arg((k, v), 'v')}" for k, v in self.args[arg_num:])
            out.append(f"%!(EXTRA {extra})")
        return "".join(out)

    def _arg_number(self, arg_num: int, form: str, i: int) -> tuple[int, int, bool]:
        """Go's ``argNumber``: an explicit ``[n]`` index at ``i``, if any."""
        if i >= len(form) or form[i] != "[":
            return arg_num, i, False
        self.reordered = True
        index, width, ok = _parse_arg_number(form, i)
        if ok and 0 <= index < len(self.args):
            return index, i + width, True
        self.good_arg_num = False
        return arg_num, i + width, ok

    def _int_from_arg(self, arg_num: int) -> tuple[int, bool, int]:
        """Go's ``intFromArg``: a ``*`` width or precision, which must be an int64."""
        if arg_num >= len(self.args):
            return 0, False, arg_num
        kind, value = self.args[arg_num]
        if kind != _INT64 or not -_TOO_LARGE <= value <= _TOO_LARGE:
            return 0, False, arg_num + 1
        return int(value), True, arg_num + 1

    def _print_arg(self, arg: GoArg, verb: str) -> str:
        """Go's ``printArg`` for the four types OPA passes."""
        kind, value = arg
        flags = self.flags
        if verb == "T":
            return _fmt_s(flags, kind)
        if kind == _BIG:
            if verb in "pw":
                raise BuiltinRefusedError(
                    f"%{verb} of a big integer (Go prints its address or its words)"
                )
            return _big_format(flags, value, verb)
        if verb == "p":
            return self._bad_verb(arg, verb)
        if kind == _INT64:
            text = _print_integer(flags, value % _UINT64, verb)
        elif kind == _FLOAT64:
            text = _print_float(flags, value, verb)
        else:
            text = _print_string(flags, value, verb)
        return self._bad_verb(arg, verb) if text is None else text

    def _bad_verb(self, arg: GoArg, verb: str) -> str:
        """Go's ``badVerb``: the value printed with ``%v`` and the verb's flags."""
        return f"%!{verb}({arg[0]}={self._print_arg(arg, 'v')})"


_FLAG_NAMES = {"#": "sharp", "0": "zero", "+": "plus", "-": "minus", " ": "space"}


def _parse_num(form: str, start: int, end: int) -> tuple[int, bool, int]:
    """Go's ``parsenum``: (number, whether there was one, the index after it)."""
    if start >= end:
        return 0, False, end
    number, found, i = 0, False, start
    while i < end and "0" <= form[i] <= "9":
        if not -_TOO_LARGE <= number <= _TOO_LARGE:
            return 0, False, end  # overflow
        number, found, i = number * 10 + ord(form[i]) - 48, True, i + 1
    return number, found, i


def _parse_arg_number(form: str, start: int) -> tuple[int, int, bool]:
    """Go's ``parseArgNumber`` at ``start`` (a ``[``): (index, length read, ok)."""
    if len(form) - start < 3:
        return 0, 1, False
    close = form.find("]", start + 1)
    if close < 0:
        return 0, 1, False
    width, ok, after = _parse_num(form, start + 1, close)
    if not ok or after != close:
        return 0, close - start + 1, False
    return width - 1, close - start + 1, True


# Go's fmt methods: each returns the text Go writes for one verb.


def _padding(flags: _Flags, count: int) -> str:
    """Go's ``writePadding``: zeros only when padding on the left."""
    if count <= 0:
        return ""
    return ("0" if flags.zero and not flags.minus else " ") * count


def _pad(flags: _Flags, text: str) -> str:
    """Go's ``pad``/``padString``: the width counts runes."""
    if not flags.wid_present or flags.wid == 0:
        return text
    fill = _padding(flags, flags.wid - len(text))
    return text + fill if flags.minus else fill + text


def _pad_spaces(flags: _Flags, text: str) -> str:
    """``pad`` with the zero flag off, as Go pads numbers it has zero-filled itself."""
    zero, flags.zero = flags.zero, False
    try:
        return _pad(flags, text)
    finally:
        flags.zero = zero


def _print_integer(flags: _Flags, bits: int, verb: str) -> str | None:
    """Go's ``pp.fmtInteger`` for an int64 (given as its 64 bits); None: a bad verb."""
    if verb in _INTEGER_BASES:
        return _fmt_integer(flags, bits, _INTEGER_BASES[verb], verb)
    if verb == "c":
        return _pad(flags, _rune(bits))
    if verb == "q":
        rune = _rune(bits)
        quote = "'" + _escaped(rune, "'", flags.plus) + "'"
        return _pad(flags, quote)
    if verb == "U":
        return _fmt_unicode(flags, bits)
    return None


_INTEGER_BASES = {"v": 10, "d": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}


def _rune(bits: int) -> str:
    """The character ``%c`` writes for a value: U+FFFD when it is no valid rune."""
    if bits > _MAX_RUNE or 0xD800 <= bits <= 0xDFFF:
        return "\ufffd"
    return chr(bits)


def _fmt_integer(flags: _Flags, bits: int, base: int, verb: str) -> str:
    """Go's ``fmt.fmtInteger`` for a signed 64-bit value."""
    negative = bits >= 2**63
    value = _UINT64 - bits if negative else bits
    precision = 0
    if flags.prec_present:
        precision = flags.prec
        if precision == 0 and value == 0:  # prints nothing but the padding
            return _pad_spaces(flags, "") if flags.wid_present else ""
    elif flags.zero and not flags.minus and flags.wid_present:
        precision = flags.wid - (1 if negative or flags.plus or flags.space else 0)
    digits = {10: "{:d}", 16: "{:x}", 8: "{:o}", 2: "{:b}"}[base].format(value)
    digits = (digits.upper() if verb == "X" else digits).rjust(precision, "0")
    if flags.sharp:
        if base == 2:
            digits = "0b" + digits
        elif base == 8 and digits[0] != "0":
            digits = "0" + digits
        elif base == 16:
            digits = ("0X" if verb == "X" else "0x") + digits
    if verb == "O":
        digits = "0o" + digits
    sign = "-" if negative else "+" if flags.plus else " " if flags.space else ""
    return _pad_spaces(flags, sign + digits)


def _fmt_unicode(flags: _Flags, bits: int) -> str:
    """Go's ``fmtUnicode``: ``U+0078``, with ``#`` ``U+0078 'x'`` for a printable rune."""
    precision = flags.prec if flags.prec_present and flags.prec > 4 else 4
    text = "U+" + f"{bits:X}".rjust(precision, "0")
    if flags.sharp and bits <= _MAX_RUNE and _is_print(chr(bits)):
        text += f" '{chr(bits)}'"
    return _pad_spaces(flags, text)


def _print_float(flags: _Flags, value: float, verb: str) -> str | None:
    """Go's ``pp.fmtFloat``: each verb's format and default precision; None: a bad verb."""
    if verb == "v":
        return _fmt_float(flags, value, "g", -1)
    if verb in "bgGxX":
        return _fmt_float(flags, value, verb, -1)
    if verb in "feE":
        return _fmt_float(flags, value, verb, 6)
    if verb == "F":
        return _fmt_float(flags, value, "f", 6)
    return None


def _fmt_float(flags: _Flags, value: float, verb: str, precision: int) -> str:
    """Go's ``fmt.fmtFloat``: sign, ``#`` (keep a point and the zeros), zero padding."""
    if flags.prec_present:
        precision = flags.prec
    num = _format_float(value, verb, precision)
    if num[0] not in "+-":
        num = "+" + num
    if flags.space and num[0] == "+" and not flags.plus:
        num = " " + num[1:]
    if flags.sharp and verb != "b":
        num = _sharp_float(num, verb, precision)
    if flags.plus or num[0] != "+":
        if flags.zero and not flags.minus and flags.wid_present and flags.wid > len(num):
            return num[0] + _padding(flags, flags.wid - len(num)) + num[1:]
        return _pad(flags, num)
    return _pad(flags, num[1:])


def _sharp_float(num: str, verb: str, precision: int) -> str:
    """The ``#`` branch of Go's ``fmtFloat``: always a decimal point, and for ``%g`` (and
    ``%x``) the trailing zeros up to the precision (6 when none). Counts as Go counts,
    the ``x`` of ``0x`` included."""
    digits = (6 if precision == -1 else precision) if verb in "vgGx" else 0
    tail, has_point, seen_nonzero = "", False, False
    i = 1
    while i < len(num):
        ch = num[i]
        if ch == ".":
            has_point = True
        elif ch in "pP" or (ch in "eE" and verb not in "xX"):
            num, tail = num[:i], num[i:]
        else:
            seen_nonzero = seen_nonzero or ch != "0"
            digits -= 1 if seen_nonzero else 0
        i += 1
    if not has_point:
        if num[1:] == "0":
            digits -= 1
        num += "."
    return num + "0" * max(digits, 0) + tail


def _format_float(value: float, verb: str, precision: int) -> str:
    """Go's ``strconv.FormatFloat(value, verb, precision, 64)``; -1: the shortest digits."""
    if verb == "b":
        return _float_b(value)
    if verb in "xX":
        return _float_x(value, verb, precision)
    if verb in "gG" and precision < 0:
        return _float_shortest_g(value, verb)
    if verb in "gG":
        return f"{value:.{max(precision, 1)}{verb}}"
    return f"{value:.{precision}{verb}}"


def _float_bits(value: float) -> tuple[bool, int, int]:
    """(negative, mantissa, binary exponent) as Go's ``genericFtoa`` reads a float64."""
    (bits,) = struct.unpack("<Q", struct.pack("<d", value))
    exponent = (bits >> _MANTISSA_BITS) & 0x7FF
    mantissa = bits & ((1 << _MANTISSA_BITS) - 1)
    if exponent == 0:
        exponent = 1  # denormal
    else:
        mantissa |= 1 << _MANTISSA_BITS
    return bits >> 63 == 1, mantissa, exponent - 1023


def _float_b(value: float) -> str:
    """Go's ``fmtB``: the decimal mantissa and binary exponent, ``4503599627370496p-52``."""
    negative, mantissa, exponent = _float_bits(value)
    exponent -= _MANTISSA_BITS
    return f"{'-' if negative else ''}{mantissa}p{'+' if exponent >= 0 else ''}{exponent}"


def _float_x(value: float, verb: str, precision: int) -> str:
    """Go's ``fmtX``: hexadecimal mantissa, ``0x1.8p+00``; rounds half to even."""
    negative, mantissa, exponent = _float_bits(value)
    if mantissa == 0:
        exponent = 0
    mantissa <<= 60 - _MANTISSA_BITS
    while mantissa and not mantissa & (1 << 60):
        mantissa, exponent = mantissa << 1, exponent - 1
    if 0 <= precision < 15:
        shift = precision * 4
        extra = (mantissa << shift) & ((1 << 60) - 1)
        mantissa >>= 60 - shift
        if extra | (mantissa & 1) > 1 << 59:
            mantissa += 1
        mantissa <<= 60 - shift
        if mantissa & (1 << 61):
            mantissa, exponent = mantissa >> 1, exponent + 1
    fraction = f"{mantissa & ((1 << 60) - 1):015x}"  # 15 hex digits below the leading one
    fraction = fraction.rstrip("0") if precision < 0 else fraction[:precision].ljust(precision, "0")
    text = f"{'-' if negative else ''}0x{(mantissa >> 60) & 1}"
    text += ("." + fraction if fraction else "") + f"p{'-' if exponent < 0 else '+'}"
    text += f"{abs(exponent):02d}"
    return text.upper() if verb == "X" else text


def _float_shortest_g(value: float, verb: str) -> str:
    """Go's shortest ``%g`` (and ``%v``): the exponent form when the exponent is < -4 or
    >= 6 (whatever the number of digits)."""
    digits, point = _shortest(value)
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        e = "E" if verb == "G" else "e"
        return f"{sign}{mantissa}{e}{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _shortest(value: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip, and the decimal point's position
    (Go's ``digs.d`` and ``digs.dp``); zero is ``("0", 1)``."""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    return (digits, point) if digits else ("0", 1)


def _print_string(flags: _Flags, value: str, verb: str) -> str | None:
    """Go's ``pp.fmtString``; None: a bad verb."""
    if verb == "v":
        return _fmt_q(flags, value) if flags.sharp_v else _fmt_s(flags, value)
    if verb == "s":
        return _fmt_s(flags, value)
    if verb in "xX":
        return _fmt_sx(flags, value, verb)
    if verb == "q":
        return _fmt_q(flags, value)
    return None


def _truncate(flags: _Flags, text: str) -> str:
    """The precision of a string verb: at most that many runes."""
    return text[: flags.prec] if flags.prec_present else text


def _fmt_s(flags: _Flags, text: str) -> str:
    return _pad(flags, _truncate(flags, text))


def _fmt_sx(flags: _Flags, text: str, verb: str) -> str:
    """Go's ``fmtSbx``: two hex digits a byte; the precision counts bytes."""
    raw = text.encode()
    if flags.prec_present:
        raw = raw[: flags.prec]
    if not raw:
        return _padding(flags, flags.wid) if flags.wid_present else ""
    prefix = ("0X" if verb == "X" else "0x") if flags.sharp else ""
    pairs = [f"{b:02X}" if verb == "X" else f"{b:02x}" for b in raw]
    body = " ".join(prefix + p for p in pairs) if flags.space else prefix + "".join(pairs)
    if not flags.wid_present or flags.wid <= len(body):
        return body
    fill = _padding(flags, flags.wid - len(body))
    return body + fill if flags.minus else fill + body


def _fmt_q(flags: _Flags, text: str) -> str:
    """Go's ``fmtQ``: backquoted with ``#`` when ``strconv.CanBackquote``, else quoted
    (``+``: ASCII only)."""
    text = _truncate(flags, text)
    if flags.sharp and _can_backquote(text):
        return _pad(flags, f"`{text}`")
    return _pad(flags, '"' + "".join(_escaped(c, '"', flags.plus) for c in text) + '"')


def _can_backquote(text: str) -> bool:
    """Go's ``strconv.CanBackquote``: no control character but tab, no DEL, no backquote,
    no byte order mark; any other non-ASCII character is fine."""
    return not any(
        ch == "\ufeff" if ch >= "\x80" else (ch < " " and ch != "\t") or ch in "`\x7f"
        for ch in text
    )


_RUNE_ESCAPES = {"\a": "a", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t", "\v": "v"}


def _escaped(ch: str, quote: str, ascii_only: bool) -> str:
    """Go's ``appendEscapedRune``: one character inside ``quote`` quotes."""
    if ch == quote or ch == "\\":
        return "\\" + ch
    code = ord(ch)
    if (code < 0x80 or not ascii_only) and _is_print(ch):
        return ch
    if ch in _RUNE_ESCAPES:
        return "\\" + _RUNE_ESCAPES[ch]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _is_print(ch: str) -> bool:
    """Go's ``strconv.IsPrint``: Python's ``isprintable`` where the two tables agree.

    Raises:
        BuiltinRefusedError: Where they may not (:func:`_tables_may_differ`): a character
            new in Unicode 15 (Go prints it, Python 3.11's tables do not know it).
    """
    printable = ch.isprintable()
    if ch >= "\x80" and _tables_may_differ(ch, printable):
        raise BuiltinRefusedError(
            f"U+{ord(ch):04X}: Python's Unicode tables ({unicodedata.unidata_version}) may "
            "not quote it as Go's (15.0) do"
        )
    return printable


def _big_format(flags: _Flags, value: int, verb: str) -> str:
    """``(*big.Int).Format``: its own verbs (``b o O d s v x X``), signs and padding."""
    base = {"b": 2, "o": 8, "O": 8, "d": 10, "s": 10, "v": 10, "x": 16, "X": 16}.get(verb)
    if base is None:
        return f"%!{verb}(big.Int={value})"
    sign = "-" if value < 0 else "+" if flags.plus or flags.plus_v else " " if flags.space else ""
    prefix = "0o" if verb == "O" else ""
    if (flags.sharp or flags.sharp_v) and verb in "boxX":
        prefix = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}[verb]
    digits = {2: "{:b}", 8: "{:o}", 10: "{:d}", 16: "{:x}"}[base].format(abs(value))
    digits = digits.upper() if verb == "X" else digits
    zeros = max(flags.prec - len(digits), 0) if flags.prec_present else 0
    left = right = 0
    length = len(sign) + len(prefix) + zeros + len(digits)
    if flags.wid_present and length < flags.wid:
        if flags.minus:
            right = flags.wid - length
        elif flags.zero and not flags.prec_present:
            zeros = flags.wid - length
        else:
            left = flags.wid - length
    return " " * left + sign + prefix + "0" * zeros + digits + " " * right


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
