"""Go's ``fmt.Sprintf`` as OPA's ``sprintf`` builtin calls it, for the embedded engine's host.

A port of Go's fmt (print.go's ``doPrintf`` and ``printArg``, format.go), strconv's float and
quote formats and math/big's ``Int.Format``, for the four Go types OPA hands ``fmt.Sprintf``:
``int64``, ``float64``, ``*big.Int`` and ``string`` (anything else as its Rego text). What
Python cannot reproduce exactly is refused (:class:`GoFormatRefused`): ``%p`` and ``%w`` of a
big integer, a lone surrogate, and quoting a character Go's Unicode tables and Python's judge
differently (those Unicode 15 added, with Python 3.11).

Why one module: the port follows Go's fmt function by function (the printer, the integer,
float, string and big-integer formats, the quoting), and each part is read against its Go
original; split, the parts would only be used together.

Example:
    ```python
    from langchain_opa_guard.engines.wasm.go_format import go_sprintf

    assert go_sprintf("%s has %d roles", ["ann", 2]) == "ann has 2 roles"
    ```
"""

from __future__ import annotations

import bisect
import math
import re
import struct
import unicodedata
from collections.abc import Iterator
from typing import Any

from langchain_opa_guard.engines.wasm.rego_values import Number, rego_string

__all__ = ["GoFormatRefused", "go_sprintf"]


class GoFormatRefused(ValueError):
    """A format or argument whose text Python cannot give exactly as Go would."""


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
        GoFormatRefused: Its text would quote a character Python's Unicode tables do not
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
        GoFormatRefused: The text holds such a character.
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
        GoFormatRefused: What Python cannot reproduce exactly: ``%p`` or ``%w`` of a big
            integer (Go prints its address or its words), text holding a surrogate, a
            quoted character new in Unicode 15 (Python 3.11's tables do not know it:
            :func:`_is_print`).
    """
    for text in (format_string, *_texts(values)):
        if _SURROGATE.search(text):
            raise GoFormatRefused("text holding a lone surrogate")
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
                raise GoFormatRefused(
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
        GoFormatRefused: Where they may not (:func:`_tables_may_differ`): a character
            new in Unicode 15 (Go prints it, Python 3.11's tables do not know it).
    """
    printable = ch.isprintable()
    if ch >= "\x80" and _tables_may_differ(ch, printable):
        raise GoFormatRefused(
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
