r"""Odd inputs for the engine parity tests: Unicode, control characters, regexes, sprintf
formats, numbers and sets, fed to ``tests/policies/corpus.rego``.

``GO_REGEXES`` and ``TEMPLATES`` feed the builtins the embedded engine provides itself
(``regex.find_n``, ``regex.replace``): Go's syntax, ASCII-only ``\w \s \b``, case folding,
empty matches, ``$`` templates, and patterns Go rejects (undefined on both engines)."""

from __future__ import annotations

import random
from typing import Any

STRINGS = [
    "",
    "plain",
    "é",
    "É",
    "ÉCOLE",
    "straße",
    "İstanbul",
    "ǅ",
    "中文字符",
    "日本語,テキスト",
    "emoji 🚀🔥",
    "🚀",
    "e\u0301",
    "\u200bzero width",
    "عربى",
    "DROP\tTABLE",
    "line\nbreak",
    "nul\u0000byte",
    "bell\u0007",
    "esc\u001b[31m",
    "del\u007f",
    "\u0085next line",
    "\u00a0nbsp",
    'quote " and \\ backslash',
    "a,b,,c",
    "  padded  ",
    "\t\n mixed space \r\n",
    "%s %d %%",
    "<script>alert(1)</script>",
    "ABCdef",
    "ﬁ ligature",
    "\ud7ff\ue000",
    "\U0010ffff",
]
REGEXES = ["^[a-z]+$", "é", "\\t", "^.{3}$", "[\\p{Han}]", "(?i)école", "^\\s", "\\d+", "^$"]
GO_REGEXES = [
    "\\w+",
    "é|e",
    "(?i)É",
    "(?i)STRASSE|straße",
    "(?i)[a-z]+",
    "(?i)k|s",
    "[[:punct:]]",
    "\\bb|\\Bc",
    "\\s*",
    ",",
    "(\\w)(\\w)?",
    "(?P<a>.)(?P<b>.)?",
    "$",
    "(?m)^",
    "x*",
    "[^\\x00-\\x7f]+",
    "\\x{1F680}",
    "(?s).",
    "\\Q.*\\E|%",
    "a{,2}",
    "\\101",
    "(",
    "\\1",
    "a**",
    "(?=x)",
]
TEMPLATES = ["<$0>", "[$1]", "${1}x", "$1x", "${b}${a}", "$$", "$", "${", "", "$é"]
NEEDLES = ["a", "é", "🚀", "ss", ",", "\n", "", " "]
NUMBERS = [
    0,
    1,
    -1,
    7,
    255,
    2**31,
    2**53,
    -(2**40),
    1.5,
    -2.25,
    0.1,
    1e-7,
    3.0,
    123456.0,
    1e21,
    2.5e-5,
]
NUMBER_TEXTS = ["1", "-2", "3.5", "1e3", "0.25", "100000000000000000000", "-0", "1.50"]
FORMATS = [
    ("%s", ["x"]),
    ("%d", ["x"]),
    ("%s", [1]),
    ("%v|%v", [1.0, 2]),
    ("%v", [[1, "a", None, True]]),
    ("%v", [{"b": 1, "a": [2]}]),
    ("%q %q", ["tab\there", "é"]),
    ("%x %X", ["hi", 255]),
    ("%5.1f|%-6s|%06d", [3.14159, "ab", -42]),
    ("%s %s", ["only one"]),
    ("%s", ["a", "extra"]),
    ("%", []),
    ("%.3s", ["abcdef"]),
    ("%+d % d", [5, 5]),
    ("%g %g %g", [1e-7, 123456789.0, 100000.0]),
    ("%t", [True]),
    ("%08.3f", [-3.5]),
    ("%c%c", [65, 0x1F680]),
    ("%o %b %#x %#o", [8, 5, 255, 8]),
    ("%v", [1e21]),
]


def corpus_inputs(count: int = 300, seed: int = 20261126) -> list[dict[str, Any]]:
    """``count`` inputs from a fixed seed, every string, regex, number and format used."""
    rng = random.Random(seed)
    inputs = []
    for index in range(count):
        s = STRINGS[index % len(STRINGS)]
        fmt, args = FORMATS[index % len(FORMATS)]
        n = NUMBERS[index % len(NUMBERS)]
        inputs.append(
            {
                "s": s,
                "t": rng.choice([*STRINGS, s[:2], s[1:]]),
                "re": REGEXES[index % len(REGEXES)],
                "re2": GO_REGEXES[index % len(GO_REGEXES)],
                "tmpl": rng.choice(TEMPLATES),
                "k": rng.choice([-1, -1, 0, 1, 2, 1.5, 2.0, -1.0]),
                "needle": NEEDLES[index % len(NEEDLES)],
                "n": n,
                "i": rng.choice([0, 7, -3, 255, 10**6, 2**31 - 1]),
                "numtext": NUMBER_TEXTS[index % len(NUMBER_TEXTS)],
                "arr": [s, n, rng.choice([None, True, "x"])],
                "set": rng.sample(STRINGS, rng.randint(0, 4)),
                "obj": {rng.choice(STRINGS): 1, "k": 2},
                "fmt": fmt,
                "args": args,
            }
        )
    return inputs
