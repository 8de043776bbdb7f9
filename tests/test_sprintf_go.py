"""``sprintf`` in the embedded engine is Go's ``fmt.Sprintf`` over OPA's arguments.

OPA hands ``fmt.Sprintf`` an ``int64`` (an integer that fits), a ``*big.Int`` (one that does
not), a ``float64`` (a number written with a fraction or an exponent; its text when float64
cannot hold it), a ``string``, or the Rego text of any other value. The host's
``go_sprintf`` ports Go's fmt for these; each case below is compared with the session's OPA
server, through an ``EmbeddedPolicy`` (one case for each rule of Go's that the port follows),
then through ``go_sprintf`` itself on seeded random formats. What Python cannot reproduce is
refused: the evaluation fails closed.
"""

from __future__ import annotations

import json
import random
import unicodedata
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from langchain_opa_guard import EmbeddedPolicy, ErrorType
from langchain_opa_guard.engines.wasm.go_format import (
    _NEW_IN_15,
    GoFormatRefused,
    go_sprintf,
)
from langchain_opa_guard.engines.wasm.rego_values import Number

PACKAGE = "sprintf_go"
SOURCE = f"""package {PACKAGE}

out[i] := sprintf(c.format, c.args) if some i, c in input.cases
"""
PATH = f"{PACKAGE}/out"
BIG = 2**70

# (id, format, arguments): each compared with OPA's text.
CASES: list[tuple[str, str, list[Any]]] = [
    # the Go types OPA passes: %T, and a bad verb names them
    ("%T of each type", "%T %T %T %T %T", [1, 1.0, "a", BIG, [1]]),
    ("%-8T|", "%-8T|%.3T", [1, 1.5]),
    ("a bad verb names int64", "%s %t %z", [1, 2, 3]),
    ("a bad verb keeps the flags", "%-5z|%#z|%+z", [1, 1.5, "a"]),
    ("%p of each type but a big one", "%p %p %p", [1, 1.5, "a"]),
    ("%w is a bad verb", "%w %#w", [1, "a"]),
    # %v: # is Go syntax, + is dropped for numbers
    ("%#v", "%#v %#v %#v %#v", ["a\n", 1, 1.5, BIG]),
    ("%+v", "%+v %+v %+v %+v", [5, 1.5, "a", BIG]),
    ("%#v of an array is its Rego text", "%#v", [["a", 1]]),
    # %q and %c of an integer: strconv.QuoteRune
    ("%q of quotes and a backslash", "%q %q %q", [39, 34, 92]),
    ("%+q is ASCII only", "%+q %+q %+q", [233, 0x1F600, 97]),
    ("%q of control characters", "%q %q %q", [0, 7, 0x7F]),
    ("%c and %q of invalid runes", "%c|%c|%c|%q|%q", [0xD800, -1, 0x110000, 0xDFFF, -5]),
    ("%#U", "%#U %U %#U %.6U %-10U|", [0x1F600, -1, 10, 65, 65]),
    ("%05c pads with zeros", "%05c|%-3q|", [97, 97]),
    # floats
    ("%x %X %b of floats", "%x %X %b %x", [1.5, -0.1, 1.5, 0.0]),
    ("%.2x rounds half to even", "%.0x %.1x %.2x %.20x", [1.5, 1.03125, 1.999, 1.5]),
    ("%b of a denormal", "%b %x", [5e-324, 5e-324]),
    ("%#g keeps zeros", "%#g %#g %#g %#.3g %#.0g", [1.0, 0.0, 123456.0, 1.0, 1.0]),
    ("%#e %#f %#.0f %#.0e", "%#e %#f %#.0f %#.0e", [1.0, 1.0, 2.0, 2.0]),
    ("%#x %#X of floats", "%#x %#X %#.2x", [1.0, 1.0, 1.0]),
    ("shortest %v and %g", "%v %v %v %g %G", [1e21, 123456.0, 1e-05, 1e6, 1e-7]),
    ("a float's zero padding goes after the sign", "%08.2f|% 08.2f|%+08.2f|%-08.2f|", [-1.5] * 4),
    ("an integer written 1.0 is a float", "%d %v %T", [1.0, 1.0, 1.0]),
    # *big.Int formats verbs b o O d s v x X itself, anything else is %!c(big.Int=...)
    ("big integer verbs", "%b|%o|%O|%d|%s|%v|%x|%X", [BIG] * 8),
    ("big integer flags", "%#x|%#o|%#b|%+d|% d|%08d|%-30d|%30d|%.30d", [BIG] * 9),
    ("a negative big integer", "%x|%+d|%030d", [-BIG] * 3),
    ("big integer bad verbs", "%c|%q|%U|%e|%t|%f|%5c", [BIG] * 7),
    ("big integer in EXTRA", "%d", [1, BIG, 1.5]),
    # widths and precisions from arguments, and indexes
    ("negative * width", "%*d|%-*d|%0*d|", [-5, 1, -5, 1, -5, 1]),
    ("* precision", "%.*d|%.*s|%.*f|", [3, 1, 2, "abcd", 1, 3.14159]),
    ("negative * precision", "%.*d|", [-1, 5]),
    ("* width that is no int64", "%*d|%*d|%*d|", [1.5, 1, "a", 1, BIG, 1]),
    ("* width too large", "%*d|", [1000001, 1]),
    ("an index past the arguments", "%[3]d %[0]d %[x]d", [1, 2]),
    ("indexes and widths", "%[2]*[1]d|%[1]*d|%[3]2d|%[1].2d", [12, 5]),
    ("no verb", "%-", []),
    ("missing", "%d %s", [1]),
    ("extra", "%d", [1, "a", 1.5, True, None]),
    # strings
    ("precision of %x counts bytes", "%.1x %.3x % x %# x %#X", ["é", "日本", "ab", "ab", "ab"]),
    ("precision of %s and %q counts runes", "%.1s %.1q %.2v", ["日本", "日本", "日本"]),
    ("%05s pads with zeros", "%05s|%-05s|%05q|", ["a", "a", "a"]),
    ("%x of an empty string", "%5x|%-5x|%x|", ["", "", ""]),
    (
        "%#q of each kind of character",
        "%#q %#q %#q %#q %#q %#q",
        ["a\tb", "a\nb", "\x7f", "`", "\ufeff", "é"],
    ),
    ("%#q of a line separator and a soft hyphen", "%#q %#q", ["a\u2028b", "a\u00adb"]),
    (
        "%q of a line separator and a soft hyphen",
        "%q %q %+q",
        ["a\u2028b", "a\u00adb", "é\U0001f600"],
    ),
    ("unassigned for Go too", "%q %+q %v %#U", ["\ud7ff\U000e0080", "\ud7ff", ["\ud7ff"], 0xD7FF]),
    ("a noncharacter is not printable in any version", "%q %c %+q", ["\uffff", 0xFFFF, "\uffff"]),
    ("%s of a letter newer than Python's tables is not quoted", "%s|%5s|%x", ["\U0001e030"] * 3),
    ("a width counts runes", "%5s|%-5s|%5v|", ["日本", "é", "😀"]),
    ("a non-ASCII verb", "%é %[1]é", [1]),
]

# (id, format, arguments): the embedded evaluation fails closed; OPA's text in the comment.
REFUSED: list[tuple[str, str, list[Any]]] = [
    ("%p of a big integer", "%p", [BIG]),  # its address: 0xc000...
    ("%w of a big integer", "%w", [BIG]),  # its words: %!w(*big.Int=&{false [0 64]})
    ("%#U of a letter newer than Python's tables", "%#U", [0x1E030]),  # U+1E030 '\U0001e030'
    ("%q of that letter as a rune", "%q", [0x1E030]),  # '\U0001e030', the letter quoted
    ("%#v of a string holding it", "%#v", ["a\U0001e030"]),  # "a\U0001e030", the letter
    ("an object key holding it", "%v", [{"\U0001e030": 1}]),  # {"\U0001e030": 1}
]


def _opa(url: str, method: str, path: str, body: bytes) -> Any:
    """One request to the OPA server (``PUT`` a policy, ``POST`` a query, ``DELETE``)."""
    request = urllib.request.Request(f"{url}/v1/{path}", data=body or None, method=method)
    request.add_header("Content-Type", "text/plain" if method == "PUT" else "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _cases(cases: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    return [{"format": form, "args": args} for form, args in cases]


def _input_json(cases: list[tuple[str, list[Any]]]) -> bytes:
    """The query's input, a ``Number`` written as its own text."""
    parts = []
    for form, args in cases:
        written = ", ".join(a if isinstance(a, Number) else json.dumps(a) for a in args)
        parts.append(f'{{"format": {json.dumps(form)}, "args": [{written}]}}')
    return ('{"input": {"cases": [' + ", ".join(parts) + "]}}").encode()


@pytest.fixture(scope="module")
def opa_policy(opa_url: str) -> Iterator[str]:
    _opa(opa_url, "PUT", "policies/sprintf_go", SOURCE.encode())
    yield opa_url
    _opa(opa_url, "DELETE", "policies/sprintf_go", b"")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPolicy]:
    directory = tmp_path_factory.mktemp("sprintf_go")
    (directory / "p.rego").write_text(SOURCE)
    with EmbeddedPolicy(
        directory, policy=PATH, backend="wasm", timeout=30.0, entrypoints=[PATH]
    ) as policy:
        yield policy


def _opa_answers(url: str, cases: list[tuple[str, list[Any]]]) -> dict[str, Any]:
    return _opa(url, "POST", f"data/{PATH}", _input_json(cases)).get("result") or {}


@pytest.fixture(scope="module")
def answers(engine: EmbeddedPolicy, opa_policy: str) -> tuple[Any, Any]:
    cases = [(form, args) for _, form, args in CASES]
    embedded = engine.query(PATH, json.loads(_input_json(cases))["input"])
    return embedded, _opa_answers(opa_policy, cases)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_sprintf_formats_as_opa_does(answers: tuple[Any, Any], index: int) -> None:
    embedded, theirs = answers
    key = str(index)
    assert key in theirs
    assert (embedded or {}).get(key, "<undefined>") == theirs[key], CASES[index][1:]


@pytest.mark.parametrize("index", range(len(REFUSED)), ids=[c[0] for c in REFUSED])
def test_sprintf_refuses_what_python_cannot_reproduce(
    tmp_path: Path, opa_policy: str, index: int
) -> None:
    """The decision is an ``engine_error`` naming ``sprintf``; OPA does answer (its text is
    each case's comment)."""
    _, form, args = REFUSED[index]
    (tmp_path / "policy.rego").write_text(
        "package agent.authz\n\n"
        'decision := {"allow": true, "reasons": [sprintf(input.format, input.args)]}\n'
    )
    engine = EmbeddedPolicy(tmp_path, backend="wasm", max_instances=1)
    decision = engine.decide({"format": form, "args": args})
    assert (decision.allow, decision.error) == (False, ErrorType.ENGINE)
    assert "sprintf" in decision.reasons[0]
    assert engine.decide({"format": "%d", "args": [1]}).reasons == ("1",)
    assert "0" in _opa_answers(opa_policy, [(form, args)])


def test_some_answers_spelled_out() -> None:
    int64, big = Number("1"), Number(str(BIG))
    assert go_sprintf("%T|%s", [int64, int64]) == "int64|%!s(int64=1)"
    assert go_sprintf("%#v|%+v", ["a", Number("5")]) == '"a"|5'
    assert go_sprintf("%q|%+q|%c", [Number("39"), Number("233"), Number("55296")]) == (
        "'\\''|'\\u00e9'|\ufffd"
    )
    assert go_sprintf("%x|%b|%#g", [Number("1.5"), Number("1.5"), Number("1.0")]) == (
        "0x1.8p+00|6755399441055744p-52|1.00000"
    )
    assert go_sprintf("%c|%+d", [big, big]) == f"%!c(big.Int={BIG})|+{BIG}"
    assert go_sprintf("%*d|%.*d|%[5]d", [Number("-3"), int64, Number("2"), int64]) == (
        "1  |01|%!d(BADINDEX)"
    )
    assert go_sprintf("%.1x|%#q|%#q", ["é", "a\u2028b", "a\x01"]) == 'c3|`a\u2028b`|"a\\x01"'
    # a number float64 cannot hold is handed over as its text (not an input Python can send)
    assert go_sprintf("%v %d %T", [Number("1e400")] * 3) == "1e400 %!d(string=1e400) string"


def test_refusals_raise_in_go_sprintf() -> None:
    for form, args in [
        ("%q", ["\U0001e030"]),
        ("%s", [["\U0001e030"]]),
        ("%s", ["\ud800"]),
        ("\ud800", []),
        ("%p", [Number(str(BIG))]),
    ]:
        with pytest.raises(GoFormatRefused):
            go_sprintf(form, args)
    assert go_sprintf("%s|%+q", ["\U0001e030", "\U0001e030"]) == '\U0001e030|"\\U0001e030"'


@pytest.mark.skipif(unicodedata.unidata_version != "14.0.0", reason="Python 3.11's tables")
def test_the_code_points_refused_are_those_python_does_not_know() -> None:
    """Each code point that ``%q`` refuses is unassigned in Python's tables (new in Unicode
    15); unassigned neighbours outside the table are quoted, as Go quotes them."""
    for start, end in _NEW_IN_15:
        for code in (start, end):
            assert unicodedata.category(chr(code)) == "Cn"
            with pytest.raises(GoFormatRefused):
                go_sprintf("%q", [chr(code)])
    assert go_sprintf("%q", ["\u0cf4\U0001e06e"]) == '"\\u0cf4\\U0001e06e"'


# Seeded random formats and arguments, through go_sprintf, against OPA.
_VERBS = "vdsqxXobOcUeEfFgGtTwz%é"
_NUMBERS = ["0", "1", "-1", "39", "233", "55296", "1114112", "-5", "1000001", "9223372036854775807",
            "-9223372036854775808", "9223372036854775808", str(-BIG), "0.0", "-0.0", "1.0", "1.5",
            "0.1", "1e6", "1e21", "1e-5", "123456789.0", "2.5", "0.125", "5e-324", "1e400",
            "1.7976931348623157e308", "12345.678", "1E2"]  # fmt: skip
_STRINGS = ["a", "", "é", "a\tb", "`", "'", '"', "\\", "\u2028", "\u00ad", "\ufeff", "\x7f",
            "日本", "\U0001f600", "\u00a0", "\u0301", "%d", "\uffff"]  # fmt: skip
_OTHERS = ["true", "null", '[1, "a"]', '{"k": [1.5, "é\\n"]}', "[]"]


def _random_spec(rnd: random.Random) -> str:
    spec = "%" + "".join(rnd.choice("#0+- ") for _ in range(rnd.choice([0, 0, 1, 2, 3])))
    if rnd.random() < 0.1:
        spec += f"[{rnd.choice(['0', '1', '2', '4', 'x', ''])}]"
    spec += rnd.choice(["", "", "", "1", "5", "12", "*", "07"])
    spec += rnd.choice(["", "", "", ".", ".0", ".2", ".6", ".14", ".20", ".*"])
    return spec + (rnd.choice(_VERBS) if rnd.random() < 0.97 else "")


def _random_arg(rnd: random.Random) -> str:
    r = rnd.random()
    if r < 0.5:
        return rnd.choice(_NUMBERS)
    return json.dumps(rnd.choice(_STRINGS)) if r < 0.85 else rnd.choice(_OTHERS)


def test_random_formats_agree_with_opa(opa_policy: str) -> None:
    rnd = random.Random(52)
    written = []
    for _ in range(1500):
        form = "|".join(_random_spec(rnd) for _ in range(rnd.choice([1, 1, 2, 3])))
        args = ", ".join(_random_arg(rnd) for _ in range(rnd.choice([0, 1, 1, 2, 3, 4])))
        written.append(f'{{"format": {json.dumps(form)}, "args": [{args}]}}')
    body = ('{"input": {"cases": [' + ", ".join(written) + "]}}").encode()
    theirs = _opa(opa_policy, "POST", f"data/{PATH}", body)["result"]
    cases = json.loads(body, parse_int=Number, parse_float=Number)["input"]["cases"]
    differ = []
    for index, case in enumerate(cases):
        try:
            mine = go_sprintf(case["format"], case["args"])
        except GoFormatRefused:
            continue
        if mine != theirs[str(index)]:
            differ.append((case["format"], case["args"], theirs[str(index)], mine))
    assert not differ, differ[:5]
