"""Go's regular expressions (RE2 syntax) on Python's ``re``, for OPA's regex builtins.

OPA's ``regex.*`` builtins use Go's ``regexp`` package: RE2 syntax, leftmost-first
matching, and Go's own rules for repeated matches and replacement templates. This module
reads a pattern in Go's syntax, rejects what Go rejects (backreferences, lookarounds,
possessive quantifiers, ``\\Z``, counts above 1000, ...; :class:`GoRegexpError`), and
writes a Python pattern that matches the same text:

* ``\\d \\s \\w \\b \\B`` and the POSIX classes ``[[:alpha:]]`` are ASCII-only, as in Go
  (``\\s`` is ``[\\t\\n\\f\\r ]``, without ``\\v``); ``\\b`` sees ``\\A`` and ``\\z`` as non-word.
* ``^`` and ``$`` anchor the text (``$`` is ``\\z``, not Python's "before a final newline")
  unless ``(?m)``; ``.`` skips ``\\n`` unless ``(?s)``; ``(?U)`` swaps greedy and lazy.
* Flags set mid-pattern (``a(?i)b``) last to the end of their group, as in Go;
  ``\\123`` is an octal escape (not a backreference), ``a{,2}`` and ``a{01}`` are literal
  text, ``\\Q...\\E`` quotes.
* Capturing groups are numbered as in Go; their names (``(?P<n>...)``, ``(?<n>...)``,
  which may start with a digit in Go) are kept here, for ``${name}`` in templates.

:meth:`GoRegexp.find_all` and :meth:`GoRegexp.replace_all` follow Go's
``FindAllString`` and ``ReplaceAllString`` loops (an empty match right after a match is
skipped; ``$1``, ``${name}``, ``$$`` templates with Go's greedy names: ``$1x`` is the
group named ``1x``). They take time linear in the text for any pattern without nested
repetitions: RE2 (``google-re2``, an automaton) finds where each match starts, and
Python's ``re`` matches from there (an attempt from every position in turn, as
``re.search`` makes, is quadratic on a long word: ``[a-z]+:`` on 50,000 letters). Given a
``deadline``, they raise :class:`TimeoutError` once it has passed, between two matches.

What differs from Go, known and left:

* ``\\pL``, ``\\p{Greek}`` and other Unicode classes are not reproduced:
  :class:`GoRegexpUnsupported` (the caller fails closed).
* Nor are repetitions of something that can match the empty string (``(a*)+``,
  ``(|a){2,}``, ``(\\b|a)*``): Python's loops pick other submatches, and sometimes other
  matches, than RE2's there. ``?`` and exact counts of such a thing are fine.
* ``(?i)`` is done here, not by Python's ``re.IGNORECASE`` (whose Unicode rules differ:
  it matches ``İ`` for ``i``): each character and class gets its simple case folding orbit,
  built from Python's Unicode tables the way Go's ``unicode.SimpleFold`` walks them
  (``(?i)k`` matches the Kelvin sign, ``(?i)\\w`` the long s). The orbits are the same as
  Go's for every code point today; a character a later Unicode version adds to a case
  pair can differ until both sides know it.
* Go limits the size and nesting depth of a compiled pattern ("expression too large");
  patterns that large are not refused here.
* Python's ``re`` backtracks: from a match's start, a pattern with nested repetitions can
  take exponential time on hostile text, where RE2 is linear. Such a match cannot be
  interrupted.

Why one module: the translation is one pass over the pattern; its parts (the parser, the
classes, the flags, case folding, the find and replace loops) each assume the others.

Example:
    ```python
    from langchain_opa_guard.engines.wasm.go_regexp import compile_go

    pattern = compile_go(r"(?P<word>\\w+)@")
    assert pattern.find_all("ann@x bob@y", -1) == ["ann@", "bob@"]
    assert pattern.replace_all("ann@x", "<${word}>") == "<ann>x"
    ```
"""

from __future__ import annotations

import bisect
import functools
import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

try:
    import re2 as _re2
except ImportError:  # pragma: no cover - google-re2 is a dependency
    _re2 = None

__all__ = ["GoRegexp", "GoRegexpError", "GoRegexpUnsupported", "compile_go", "go_expand"]


class GoRegexpError(ValueError):
    """Go's ``regexp.Compile`` rejects the pattern (in OPA: a builtin error)."""


class GoRegexpUnsupported(ValueError):
    """Go accepts the pattern, but it uses a feature not reproduced here (``\\p{...}``)."""


_MAX_RUNE = 0x10FFFF
_MAX_REPEAT = 1000

# -- character sets as sorted lists of inclusive code point ranges ----------------------

Ranges = list[tuple[int, int]]


def _clean(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _negate(ranges: Ranges) -> Ranges:
    out: Ranges = []
    next_lo = 0
    for lo, hi in _clean(ranges):
        if lo > next_lo:
            out.append((next_lo, lo - 1))
        next_lo = hi + 1
    if next_lo <= _MAX_RUNE:
        out.append((next_lo, _MAX_RUNE))
    return out


def _spans(text: str) -> Ranges:
    """``"0-9A-Z_"`` -> ranges (a tiny notation for the ASCII tables below)."""
    out: Ranges = []
    i = 0
    while i < len(text):
        if i + 2 < len(text) and text[i + 1] == "-":
            out.append((ord(text[i]), ord(text[i + 2])))
            i += 3
        else:
            out.append((ord(text[i]), ord(text[i])))
            i += 1
    return out


_PERL_GROUPS: dict[str, tuple[bool, Ranges]] = {
    "d": (False, _spans("0-9")),
    "D": (True, _spans("0-9")),
    "s": (False, _spans("\t\n\f\r ")),
    "S": (True, _spans("\t\n\f\r ")),
    "w": (False, _spans("0-9A-Za-z_")),
    "W": (True, _spans("0-9A-Za-z_")),
}

_POSIX_GROUPS: dict[str, Ranges] = {
    "alnum": _spans("0-9A-Za-z"),
    "alpha": _spans("A-Za-z"),
    "ascii": [(0, 0x7F)],
    "blank": _spans("\t "),
    "cntrl": [(0, 0x1F), (0x7F, 0x7F)],
    "digit": _spans("0-9"),
    "graph": [(ord("!"), ord("~"))],
    "lower": _spans("a-z"),
    "print": [(ord(" "), ord("~"))],
    "punct": [(ord("!"), ord("/")), (ord(":"), ord("@")), (ord("["), ord("`")), (0x7B, 0x7E)],
    "space": _spans("\t\n\v\f\r "),
    "upper": _spans("A-Z"),
    "word": _spans("0-9A-Za-z_"),
    "xdigit": _spans("0-9A-Fa-f"),
}


@functools.lru_cache(maxsize=1)
def _case_orbits() -> dict[int, tuple[int, ...]]:
    """Each cased character -> the characters equal to it under simple case folding (Go's
    ``unicode.SimpleFold`` orbits). Built on first use (cased characters end below
    U+20000)."""
    classes: dict[str, set[str]] = {}
    for cp in range(0x20000):
        ch = chr(cp)
        folded = ch.casefold()
        if len(folded) != 1:  # a full folding (ß -> ss): the simple one, if any, is lower()
            folded = ch.lower() if len(ch.lower()) == 1 else ch
        if folded != ch:
            classes.setdefault(folded, {folded}).add(ch)
    orbits: dict[int, tuple[int, ...]] = {}
    for members in classes.values():
        orbit = tuple(sorted(ord(m) for m in members))
        for m in orbit:
            orbits[m] = orbit
    return orbits


def _fold(ranges: Ranges) -> Ranges:
    """``ranges`` with every character's case orbit added, as Go folds a class."""
    ranges = _clean(ranges)
    starts = [lo for lo, _ in ranges]
    out = list(ranges)
    for char, orbit in _case_orbits().items():
        i = bisect.bisect_right(starts, char) - 1
        if i >= 0 and char <= ranges[i][1]:
            out.extend((m, m) for m in orbit)
    return _clean(out)


def _group(negated: bool, ranges: Ranges, fold: bool) -> Ranges:
    base = _fold(ranges) if fold else _clean(ranges)
    return _negate(base) if negated else base


def _class_text(ranges: Ranges) -> str:
    parts = []
    for lo, hi in ranges:
        parts.append(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}")
    return "".join(parts)


def _char(c: int) -> str:
    if c < 0x80 and chr(c).isalnum():
        return chr(c)
    return f"\\U{c:08x}"


_WORD = "[0-9A-Za-z_]"
_ANY = "(?s:.)"
_NOTHING = "(?!)"
_WORD_BOUNDARY = f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))"
_NOT_WORD_BOUNDARY = f"(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))"


# -- the parser: Go's regexp/syntax rules, Python pattern text out ------------------------


@dataclass
class _Flags:
    fold: bool = False  # i
    multiline: bool = False  # m
    dotall: bool = False  # s
    ungreedy: bool = False  # U


@dataclass
class _Item:
    """One element of a concatenation: Python text, and the counted repetitions in it
    (for Go's limit of 1000 copies of the innermost thing)."""

    text: str
    repeats: list[_Repeat] = field(default_factory=list)
    nullable: bool = False  # it can match the empty string


@dataclass
class _Repeat:
    count: int  # Go's m: max, or min when unbounded; 0 for {0}
    inner: list[_Repeat]


@dataclass
class _Frame:
    flags: _Flags  # the flags when the group opened, restored at its ')'
    capture: bool
    alternatives: list[list[_Item]] = field(default_factory=list)
    items: list[_Item] = field(default_factory=list)


def _repeat_valid(repeats: list[_Repeat], n: int) -> bool:
    for rep in repeats:
        if rep.count == 0:
            continue
        if rep.count > n:
            return False
        if not _repeat_valid(rep.inner, n // rep.count):
            return False
    return True


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.s = pattern
        self.pos = 0
        self.flags = _Flags()
        self.stack: list[_Frame] = [_Frame(_Flags(), capture=False)]
        self.names: list[str | None] = []
        self.unsupported = ""  # why Python cannot reproduce it (raised if Go accepts it)

    def error(self, what: str) -> GoRegexpError:
        return GoRegexpError(f"error parsing regexp: {what}: `{self.s}`")

    # The main loop mirrors regexp/syntax.parse.
    def parse(self) -> str:
        s = self.s
        last_repeat = False
        while self.pos < len(s):
            c = s[self.pos]
            repeat = False
            if c == "(":
                self.open_group()
            elif c == "|":
                frame = self.stack[-1]
                frame.alternatives.append(frame.items)
                frame.items = []
                self.pos += 1
            elif c == ")":
                self.close_group()
            elif c == "^":
                self.push("(?m:^)" if self.flags.multiline else "\\A", nullable=True)
                self.pos += 1
            elif c == "$":
                self.push("(?m:$)" if self.flags.multiline else "\\Z", nullable=True)
                self.pos += 1
            elif c == ".":
                self.push(_ANY if self.flags.dotall else "[^\\n]")
                self.pos += 1
            elif c == "[":
                self.push(self.parse_class())
            elif c in "*+?":
                self.pos += 1
                self.repeat(c, 0, 0, last_repeat)
                repeat = True
            elif c == "{":
                bounds = self.parse_repeat_bounds()
                if bounds is None:
                    self.literal("{")
                    self.pos += 1
                else:
                    lo, hi, end = bounds
                    if lo < 0 or lo > _MAX_REPEAT or hi > _MAX_REPEAT or (hi >= 0 and lo > hi):
                        raise self.error("invalid repeat count")
                    self.pos = end
                    self.repeat("{", lo, hi, last_repeat)
                    repeat = True
            elif c == "\\":
                self.parse_backslash()
            else:
                self.literal(c)
                self.pos += 1
            last_repeat = repeat
        if len(self.stack) != 1:
            raise self.error("missing closing )")
        if self.unsupported:
            raise GoRegexpUnsupported(f"{self.unsupported}: `{s}`")
        return self.alternation(self.stack[0]).text

    def push(self, text: str, repeats: list[_Repeat] | None = None, nullable: bool = False) -> None:
        self.stack[-1].items.append(_Item(text, repeats or [], nullable))

    def literal(self, c: str) -> None:
        ranges = [(ord(c), ord(c))]
        self.push(_set_text(_fold(ranges) if self.flags.fold else ranges, False))

    def alternation(self, frame: _Frame) -> _Item:
        branches = [*frame.alternatives, frame.items]
        texts = []
        repeats: list[_Repeat] = []
        nullable = False
        for branch in branches:
            texts.append("".join(item.text for item in branch))
            for item in branch:
                repeats.extend(item.repeats)
            nullable = nullable or all(item.nullable for item in branch)
        return _Item("|".join(texts), repeats, nullable)

    # -- groups ---------------------------------------------------------------------

    def open_group(self) -> None:
        s = self.s
        if s.startswith("(?", self.pos):
            rest = s[self.pos :]
            named_p = rest.startswith("(?P<") and len(rest) > 4
            if named_p or (rest.startswith("(?<") and len(rest) > 3):
                start = 4 if named_p else 3
                end = rest.find(">")
                if end < 0:
                    raise self.error("invalid named capture")
                name = rest[start:end]
                if not name or not all(ch == "_" or (ch.isascii() and ch.isalnum()) for ch in name):
                    raise self.error("invalid named capture")
                self.names.append(name)
                self.stack.append(_Frame(self.flags, capture=True))
                self.flags = _Flags(**vars(self.flags))
                self.pos += end + 1
                return
            self.parse_flags()
            return
        self.names.append(None)
        self.stack.append(_Frame(self.flags, capture=True))
        self.flags = _Flags(**vars(self.flags))
        self.pos += 1

    def parse_flags(self) -> None:
        s = self.s
        start = self.pos
        i = self.pos + 2
        flags = _Flags(**vars(self.flags))
        negative = False
        saw_flag = False
        while i < len(s):
            c = s[i]
            i += 1
            if c in "imsU":
                value = not negative
                if c == "i":
                    flags.fold = value
                elif c == "m":
                    flags.multiline = value
                elif c == "s":
                    flags.dotall = value
                else:
                    flags.ungreedy = value
                saw_flag = True
            elif c == "-":
                if negative:
                    break
                negative = True
                saw_flag = False
            elif c in ":)":
                if negative and not saw_flag:
                    break
                if c == ":":
                    self.stack.append(_Frame(self.flags, capture=False))
                self.flags = flags
                self.pos = i
                return
            else:
                break
        raise self.error(f"invalid or unsupported Perl syntax: `{s[start:i]}`")

    def close_group(self) -> None:
        if len(self.stack) < 2:
            raise self.error("unexpected )")
        frame = self.stack.pop()
        body = self.alternation(frame)
        self.flags = frame.flags
        self.pos += 1
        text = f"({body.text})" if frame.capture else f"(?:{body.text})"
        self.push(text, body.repeats, body.nullable)

    # -- repetition -----------------------------------------------------------------

    def parse_repeat_bounds(self) -> tuple[int, int, int] | None:
        """Go's parseRepeat: ``{n}``, ``{n,}``, ``{n,m}`` -> (min, max, end), max -1 for
        unbounded, min -1 for a number too big; ``None`` when ``{`` is a literal."""
        s, i = self.s, self.pos + 1
        lo, i = self.parse_int(i)
        if lo is None or i >= len(s):
            return None
        if s[i] != ",":
            hi = lo
        else:
            i += 1
            if i >= len(s):
                return None
            if s[i] == "}":
                hi = -1
            else:
                bound, i = self.parse_int(i)
                if bound is None:
                    return None
                hi = bound
                if hi < 0:
                    lo = -1
        if i >= len(s) or s[i] != "}":
            return None
        return lo, hi, i + 1

    def parse_int(self, i: int) -> tuple[int | None, int]:
        s = self.s
        if i >= len(s) or not "0" <= s[i] <= "9":
            return None, i
        if i + 1 < len(s) and s[i] == "0" and "0" <= s[i + 1] <= "9":
            return None, i  # leading zeros: not a count
        j = i
        while j < len(s) and "0" <= s[j] <= "9":
            j += 1
        value = 0
        for digit in s[i:j]:
            if value >= 10**8:
                value = -1
                break
            value = value * 10 + int(digit)
        return value, j

    def repeat(self, op: str, lo: int, hi: int, last_repeat: bool) -> None:
        s = self.s
        lazy = self.flags.ungreedy
        if self.pos < len(s) and s[self.pos] == "?":
            self.pos += 1
            lazy = not lazy
        if last_repeat:
            raise self.error("invalid nested repetition operator")
        items = self.stack[-1].items  # (?i) pushes nothing: a*(?i)* repeats a*
        if not items:
            raise self.error("missing argument to repetition operator")
        target = items[-1]
        if target.nullable and (op in "*+" or hi != lo):
            # Python and RE2 part ways on loops whose body can match nothing: (a*)+,
            # (|a)+ pick other submatches, sometimes other matches.
            self.unsupported = self.unsupported or (
                "a repetition of something that can match the empty string is not "
                "supported by the embedded engine"
            )
        if op == "{":
            suffix = f"{{{lo}}}" if lo == hi else f"{{{lo},}}" if hi < 0 else f"{{{lo},{hi}}}"
            repeats = [_Repeat(hi if hi >= 0 else lo, target.repeats)]
            if (lo >= 2 or hi >= 2) and not _repeat_valid(repeats, _MAX_REPEAT):
                raise self.error("invalid repeat count")
        else:
            suffix = op
            repeats = target.repeats
        nullable = target.nullable or op in "*?" or (op == "{" and lo == 0)
        items[-1] = _Item(f"(?:{target.text}){suffix}{'?' if lazy else ''}", repeats, nullable)

    # -- escapes --------------------------------------------------------------------

    def parse_backslash(self) -> None:
        s = self.s
        nxt = s[self.pos + 1] if self.pos + 1 < len(s) else ""
        simple = {"A": "\\A", "z": "\\Z", "b": _WORD_BOUNDARY, "B": _NOT_WORD_BOUNDARY}
        if nxt in simple and nxt:
            self.push(simple[nxt], nullable=True)
            self.pos += 2
            return
        if nxt == "C":
            raise self.error("invalid escape sequence: `\\C`")
        if nxt == "Q":
            end = s.find("\\E", self.pos + 2)
            text = s[self.pos + 2 :] if end < 0 else s[self.pos + 2 : end]
            for ch in text:
                self.literal(ch)
            self.pos = len(s) if end < 0 else end + 2
            return
        if nxt in ("p", "P"):
            self.pos = self.skip_unicode_class(self.pos)
            self.push(_NOTHING)
            return
        if nxt and nxt in _PERL_GROUPS:
            negated, ranges = _PERL_GROUPS[nxt]
            self.pos += 2
            self.push(_set_text(_group(negated, ranges, self.flags.fold), False))
            return
        c, self.pos = self.parse_escape(self.pos)
        self.literal(chr(c))

    def skip_unicode_class(self, i: int) -> int:
        """Step over ``\\pL`` or ``\\p{Name}`` (not reproduced: noted as unsupported)."""
        s = self.s
        self.unsupported = self.unsupported or (
            "Unicode classes such as \\p{Greek} are not supported by the embedded engine"
        )
        if i + 2 >= len(s):
            raise self.error("invalid character class range")
        if s[i + 2] != "{":
            return i + 3
        end = s.find("}", i)
        if end < 0:
            raise self.error("invalid character class range")
        return end + 1

    def parse_escape(self, i: int) -> tuple[int, int]:
        """Go's parseEscape: the character an escape at ``i`` stands for, and the end."""
        s = self.s
        start = i
        i += 1
        if i >= len(s):
            raise self.error("trailing backslash at end of expression")
        c = s[i]
        i += 1
        if c.isascii() and not c.isalnum():
            return ord(c), i
        if c in "1234567" and (i >= len(s) or not "0" <= s[i] <= "7"):
            pass  # a backreference: not in Go
        elif c in "01234567":
            value = int(c)
            for _ in range(2):
                if i >= len(s) or not "0" <= s[i] <= "7":
                    break
                value = value * 8 + int(s[i])
                i += 1
            return value, i
        elif c == "x" and i < len(s):
            if s[i] == "{":
                j = i + 1
                value = 0
                digits = 0
                while j < len(s) and s[j] != "}":
                    if s[j] not in "0123456789abcdefABCDEF":
                        break
                    value = value * 16 + int(s[j], 16)
                    if value > _MAX_RUNE:
                        break
                    digits += 1
                    j += 1
                else:
                    if j < len(s) and digits:
                        return value, j + 1
            elif i + 1 < len(s) and all(ch in "0123456789abcdefABCDEF" for ch in s[i : i + 2]):
                return int(s[i : i + 2], 16), i + 2
        elif c in "afnrtv":
            return ord({"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}[c]), i
        raise self.error(f"invalid escape sequence: `{s[start:i]}`")

    # -- character classes ----------------------------------------------------------

    def parse_class(self) -> str:
        s = self.s
        whole_start = self.pos
        i = self.pos + 1
        negated = False
        if i < len(s) and s[i] == "^":
            negated = True
            i += 1
        fold = self.flags.fold
        literal: Ranges = []  # characters and ranges
        groups: Ranges = []  # ASCII and Perl classes, each folded (under (?i)) and negated
        first = True
        while i >= len(s) or s[i] != "]" or first:
            if i >= len(s):
                raise self.error(f"missing closing ]: `{s[whole_start:]}`")
            first = False
            if s.startswith("[:", i) and len(s) - i > 2:
                end = s.find(":]", i + 2)
                if end >= 0:
                    name = s[i + 2 : end]
                    group_negated = name.startswith("^")
                    if group_negated:
                        name = name[1:]
                    if name not in _POSIX_GROUPS:
                        raise self.error(f"invalid character class range: `{s[i : end + 2]}`")
                    groups += _group(group_negated, _POSIX_GROUPS[name], fold)
                    i = end + 2
                    continue
            if s.startswith(("\\p", "\\P"), i):
                i = self.skip_unicode_class(i)
                continue
            if s[i] == "\\" and i + 1 < len(s) and s[i + 1] in _PERL_GROUPS:
                group_negated, ranges = _PERL_GROUPS[s[i + 1]]
                groups += _group(group_negated, ranges, fold)
                i += 2
                continue
            start = i
            lo, i = self.class_char(i, whole_start)
            hi = lo
            if i + 1 < len(s) and s[i] == "-" and s[i + 1] != "]":
                hi, i = self.class_char(i + 1, whole_start)
                if hi < lo:
                    raise self.error(f"invalid character class range: `{s[start:i]}`")
            literal.append((lo, hi))
        self.pos = i + 1
        ranges = _clean((_fold(literal) if fold else literal) + groups)
        return _set_text(_negate(ranges) if negated else ranges, False)

    def class_char(self, i: int, whole_start: int) -> tuple[int, int]:
        s = self.s
        if i >= len(s):
            raise self.error(f"missing closing ]: `{s[whole_start:]}`")
        if s[i] == "\\":
            return self.parse_escape(i)
        return ord(s[i]), i + 1


def _set_text(ranges: Ranges, negated: bool) -> str:
    if not ranges:
        return _ANY if negated else _NOTHING
    return f"[{'^' if negated else ''}{_class_text(ranges)}]"


# -- compiled patterns ------------------------------------------------------------------


class GoRegexp:
    """A Go pattern compiled to Python's ``re``, with Go's find-all and replace loops."""

    def __init__(self, pattern: str) -> None:
        parser = _Parser(pattern)
        text = parser.parse()
        self.source = pattern
        self.names = [None, *parser.names]
        try:
            self.regex = re.compile(text)
        except (re.error, RecursionError, OverflowError) as exc:  # pragma: no cover
            raise GoRegexpUnsupported(f"the pattern cannot be reproduced: `{pattern}`") from exc
        self.locator = _locator(pattern)

    def find_all(self, text: str, n: int, deadline: float | None = None) -> list[str]:
        """Go's ``FindAllString(text, n)``: at most ``n`` matches, all when ``n < 0``.

        Raises:
            TimeoutError: ``time.monotonic()`` passed ``deadline`` between two matches.
        """
        if n < 0:
            n = len(text.encode()) + 1
        out: list[str] = []
        pos, prev_end, end = 0, -1, len(text)
        search = _Searcher(self, text).search
        while len(out) < n and pos <= end:
            _check(deadline)
            match = search(pos)
            if match is None:
                break
            start, stop = match.span()
            accept = True
            if stop == pos:  # an empty match: never right after the previous match
                if start == prev_end:
                    accept = False
                pos += 1
            else:
                pos = stop
            prev_end = stop
            if accept:
                out.append(match.group())
        return out

    def replace_all(self, text: str, template: str, deadline: float | None = None) -> str:
        """Go's ``ReplaceAllString(text, template)``, ``$`` templates expanded.

        Raises:
            TimeoutError: ``time.monotonic()`` passed ``deadline`` between two matches.
        """
        out: list[str] = []
        last_end = 0
        search_pos = 0
        end = len(text)
        expand = "$" in template
        search = _Searcher(self, text).search
        while search_pos <= end:
            _check(deadline)
            match = search(search_pos)
            if match is None:
                break
            start, stop = match.span()
            out.append(text[last_end:start])
            if stop > last_end or start == 0:
                out.append(go_expand(template, match, self.names) if expand else template)
            last_end = stop
            width = 1 if search_pos < end else 0
            if search_pos + width > stop:
                search_pos += width
            elif search_pos + 1 > stop:
                search_pos += 1
            else:
                search_pos = stop
        out.append(text[last_end:])
        return "".join(out)


def _check(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError("the deadline passed during a regular expression search")


def _locator(pattern: str) -> Any:
    """RE2's compiled form of a Go pattern (Go's ``regexp`` is a port of RE2), or ``None``
    when RE2 is not installed or reads the pattern otherwise."""
    if _re2 is None:  # pragma: no cover - google-re2 is a dependency
        return None
    try:
        return _re2.compile(pattern.encode("utf-8"))
    except Exception:  # noqa: BLE001 - any refusal: the Python search alone
        return None


class _Searcher:
    """The leftmost match at or after a position of one text, found in linear time.

    Python's ``re.search`` tries each start position in turn, and an attempt that fails
    may read far ahead: ``[a-z]+:`` on a 50,000-letter word reads 1.25 billion
    characters. RE2 (an automaton, linear in the text) finds where the leftmost match
    starts; Python's ``re.match`` at that position gives the match itself, the one
    ``re.search`` would give (it tries the same position after failing at every earlier
    one), with this module's reading of Go's syntax. Where the two disagree (RE2 finds a
    start where Python matches nothing), Python's own search decides. Python tries the
    position searched from first: one attempt per match, as Go's own loop makes.
    """

    def __init__(self, regexp: GoRegexp, text: str) -> None:
        self.regex = regexp.regex
        self.locator = regexp.locator
        self.text = text
        self.data = b""
        if self.locator is not None:
            try:
                self.data = text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: RE2 reads UTF-8 only
                self.locator = None
        self.ascii = len(self.data) == len(text)
        # One pair of offsets known to stand for the same place (positions only grow).
        self.chars = 0
        self.bytes = 0

    def search(self, pos: int) -> re.Match[str] | None:
        if self.locator is None:
            return self.regex.search(self.text, pos)
        # A match that starts right here (the common case of dense matches) is found
        # without a call to RE2, which costs some microseconds.
        match = self.regex.match(self.text, pos)
        if match is not None:
            return match
        data = self.data
        at = self._byte(pos)
        while True:
            found = self.locator.search(data, at)
            if found is None:
                return None
            start = found.start()
            if start == len(data) or not 0x80 <= data[start] < 0xC0:
                break
            # RE2 reads bytes: an empty match (\B) can fall inside a character, where Go
            # (which reads characters) sees nothing. Go on from the next character.
            at = start + 1
            while at < len(data) and 0x80 <= data[at] < 0xC0:
                at += 1
        match = self.regex.match(self.text, self._char(start))
        if match is None:  # pragma: no cover - the two readings of the pattern differ
            return self.regex.search(self.text, pos)
        return match

    def _byte(self, char: int) -> int:
        if self.ascii:
            return char
        if char < self.chars:
            self.chars = self.bytes = 0
        self.bytes += len(self.text[self.chars : char].encode("utf-8"))
        self.chars = char
        return self.bytes

    def _char(self, byte: int) -> int:
        if self.ascii:
            return byte
        if byte < self.bytes:
            self.chars = self.bytes = 0
        self.chars += len(self.data[self.bytes : byte].decode("utf-8"))
        self.bytes = byte
        return self.chars


def go_expand(template: str, match: re.Match[str], names: list[str | None]) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``; a name
    runs as far as letters, digits and ``_`` go; a bad reference is the ``$`` itself."""
    out: list[str] = []
    rest = template
    while rest:
        before, dollar, after = rest.partition("$")
        if not dollar:
            break
        out.append(before)
        rest = after
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        parsed = _extract(rest)
        if parsed is None:
            out.append("$")
            continue
        name, number, rest = parsed
        if number >= 0:
            if number < len(names):
                out.append(match.group(number) or "")
        else:
            for index, group_name in enumerate(names):
                if group_name == name and match.start(index) >= 0:
                    out.append(match.group(index))
                    break
    out.append(rest)
    return "".join(out)


def _extract(text: str) -> tuple[str, int, str] | None:
    brace = text.startswith("{")
    if brace:
        text = text[1:]
    i = 0
    while i < len(text) and (
        text[i] == "_" or unicodedata.category(text[i])[0] == "L" or text[i].isdecimal()
    ):
        i += 1
    if i == 0:
        return None
    name = text[:i]
    if brace:
        if i >= len(text) or text[i] != "}":
            return None
        i += 1
    number = 0
    for ch in name:
        if not "0" <= ch <= "9" or number >= 10**8:
            number = -1
            break
        number = number * 10 + int(ch)
    if name[0] == "0" and len(name) > 1:
        number = -1
    return name, number, text[i:]


@functools.lru_cache(maxsize=256)
def compile_go(pattern: str) -> GoRegexp:
    """The compiled form of a Go pattern (cached, as OPA caches its regexps).

    Raises:
        GoRegexpError: Go rejects the pattern.
        GoRegexpUnsupported: Go accepts it, but it is not reproduced here.
    """
    return GoRegexp(pattern)
