# ruff: noqa: RUF001 - look-alike characters are the point of these cases
"""Red team 52 pins: where the embedded engine (wasm, host builtins in Python) and OPA agree.

Each test evaluates many cases in one query of a small module loaded into both the
session's OPA server and an ``EmbeddedPolicy`` (``backend="wasm"``), and asserts the two
answers are equal: ``regex.find_n``/``regex.replace`` (Go's RE2 read by ``go_regexp``) on
Unicode, newlines, anchors, classes, flags, lazy and empty matches, ``$`` templates;
``indexof_n``, ``urlquery.encode``, ``hex.encode``, ``strings.any_prefix_match``/
``any_suffix_match``; ``sprintf`` cases that agree; values read back (big and exponent
numbers, escaped keys); and the shipped information-flow pack on link-bearing content,
decided one by one and as a batched turn.
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import POLICIES

from langchain_opa_guard import EmbeddedPolicy, OPAServer
from langchain_opa_guard.engines.wasm.go_regexp import GoRegexpUnsupported, compile_go

PACKAGE = "redteam52.pins"
SOURCE = f"""package {PACKAGE}

find[i] := regex.find_n(c.pattern, c.text, c.n) if some i, c in input.find

replace[i] := regex.replace(c.text, c.pattern, c.template) if some i, c in input.replace

positions[i] := indexof_n(c.text, c.needle) if some i, c in input.indexof

formatted[i] := sprintf(c.format, c.args) if some i, c in input.sprintf

encoded[i] := urlquery.encode(c) if some i, c in input.urlquery

hexed[i] := hex.encode(c) if some i, c in input.hex

prefixed[i] := strings.any_prefix_match(c[0], c[1]) if some i, c in input.prefix

suffixed[i] := strings.any_suffix_match(c[0], c[1]) if some i, c in input.suffix

echo := input.echo

results := {{
	"find": find, "replace": replace, "positions": positions, "formatted": formatted,
	"encoded": encoded, "hexed": hexed, "prefixed": prefixed, "suffixed": suffixed,
	"echo": object.get(input, "echo", null),
}}
"""
RESULTS = PACKAGE.replace(".", "/") + "/results"


def _opa(url: str, method: str, path: str, body: bytes) -> Any:
    """One request to the OPA server (``PUT`` a policy, ``POST`` a query, ``DELETE``)."""
    request = urllib.request.Request(f"{url}/v1/{path}", data=body or None, method=method)
    request.add_header("Content-Type", "text/plain" if method == "PUT" else "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


@pytest.fixture(scope="module")
def both(opa_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("redteam52_pins")
    (directory / "p.rego").write_text(SOURCE)
    _opa(opa_url, "PUT", "policies/redteam52_pins", SOURCE.encode())
    with EmbeddedPolicy(
        directory, policy=RESULTS, backend="wasm", timeout=60.0, entrypoints=[RESULTS]
    ) as engine:

        def ask(document: dict[str, Any]) -> tuple[Any, Any]:
            body = json.dumps({"input": document}).encode()
            theirs = _opa(opa_url, "POST", f"data/{RESULTS}", body)["result"]
            return engine.query(RESULTS, document), theirs

        yield ask
    _opa(opa_url, "DELETE", "policies/redteam52_pins", b"")


def _differences(ours: Any, theirs: Any, key: str, cases: list[Any]) -> list[Any]:
    ours, theirs = ours.get(key, {}), theirs.get(key, {})
    return [
        (cases[i], ours.get(str(i), "<undefined>"), theirs.get(str(i), "<undefined>"))
        for i in range(len(cases))
        if ours.get(str(i), "<undefined>") != theirs.get(str(i), "<undefined>")
    ]


# -- regular expressions ---------------------------------------------------------------------

TEXTS = [
    "a\nb\n", "\n", "", "ab\u2028cd\u0085ef", "ſK\u212aks", "x\u00a0y\u3000z", "١٢٣ 123",
    "a\x00b", "e\u0301e", "İi\u0131I", "Straße STRASSE", "ǅǄǆ", "ΣσςΣ", "aaa", "abc abc",
    "日本語 text", "\U0001f600x\U0001f600", "a\rb\r\n", "a\tb\x0bc\x0cd", "µΜμ", "ω Ω Ω", "ⅰⅠ",
]  # fmt: skip
PATTERNS = [
    "^", "$", "^$", "(?m)^", "(?m)$", "(?m)^.*$", "\\b", "\\B", "\\s+", "\\S+", "\\d", "\\w+",
    "\\W", "[[:alpha:]]+", "[[:^alpha:]]", "(?i)k", "(?i)s", "(?i)ss", "(?i)[k-s]", "(?i)\\w+",
    "(?s).", ".", "(?U)a+", "a+?", "a*", "a*?", "", "x*", "(?i)σ", "(?i)ǅ", "(?i)µ", "(?i)ω",
    "(?i)i", "(?i)ⅰ", "[^a]", "(?i)[^k]", "\\x{212a}", "[\\d\\s]", "[^\\S\\n]", "(a|ab)(c|bcd)?",
    "a|", "|a", "(?i)strasse", "\\Q.*\\E", "[[:space:]]", "[[:word:]]+", "\\v", "\\C", "(?-m)$",
    "(?im)^k$", "\\A", "\\z", ".*", "(?s).*", "(?U).*?", "(?i)[[:upper:]]", "(?i)\\W", "(?i)[^\\W]",
]  # fmt: skip
TEMPLATES = [
    "$1", "${1}", "$w", "${w}", "$2x", "${2}x", "$$", "$", "$10", "$01", "${01}", "$w.", "${}",
    "${w", "$ ", "$é", "$\u0661", "${2}${1}", "$3", "$-1", "$1$", "$_", "$wx",
]  # fmt: skip


def test_regex_builtins_agree_on_adversarial_text(both: Any) -> None:
    finds = [{"pattern": p, "text": t, "n": -1} for p in PATTERNS for t in TEXTS]
    finds += [
        {"pattern": p, "text": t, "n": n}
        for p in ("a*", "", "a")
        for t in ("aaa", "baaac")
        for n in (0, 1, 2, -2, 100)
    ]
    replaces = [{"pattern": p, "text": t, "template": "<$0>"} for p in PATTERNS for t in TEXTS]
    replaces += [
        {"pattern": "(?P<w>\\w+)@(\\w+)", "text": "ann@x bob@y", "template": t} for t in TEMPLATES
    ]
    replaces += [
        {"pattern": p, "text": t, "template": "-"}
        for p in ("a*", "", "x*", "\\b", "a*?", "(?m)$", "(?m)^")
        for t in ("baaac", "", "abc", "a\nb", "日本")
    ]
    ours, theirs = both({"find": finds, "replace": replaces})
    assert _differences(ours, theirs, "find", finds) == []
    assert _differences(ours, theirs, "replace", replaces) == []


ATOMS = [
    "a", "b", "k", "s", "K", "S", "é", "ß", "σ", "Σ", ".", "\\d", "\\D", "\\s", "\\S", "\\w",
    "\\W", "\\b", "\\B", "^", "$", "\\A", "\\z", "[a-c]", "[^a]", "[[:alpha:]]", "[[:^space:]]",
    "[[:punct:]]", "[\\s\\d]", "[^\\s]", "[k-s]", "\\x{17F}", "\\n", "\\.", "\\Q.\\E", "[é-ê]",
    "\\x41", "\\101", "[\\x{0}-\\x{10}]", "日", "[^\\n]", "(?i:k)", "(?s:.)", "(?m:^)", "(?m:$)",
    "(?U:a+)", "a{2}", "a{1,}", "x{0,2}", "{", "}", "]", "\\{",
]  # fmt: skip
QUANTIFIERS = ["", "", "", "*", "+", "?", "*?", "+?", "??", "{0,2}", "{1,3}?", "{2}"]
FLAGS = ["", "", "", "(?i)", "(?m)", "(?s)", "(?U)", "(?im)", "(?is)", "(?-s)", "(?i-m)"]
CHARS = [
    "a", "b", "k", "s", "K", "S", "ſ", "\u212a", "é", "É", "e\u0301", "ß", "ẞ", "σ", "ς", "Σ",
    "\n", "\r", " ", "\t", "\x0b", "\x0c", "\u0085", "\u2028", "\u00a0", "1", "١", "_", ".",
    "{", "}", "日", "\U0001f600", "\x00", "A", "aa", "İ", "ı", "ǅ",
]  # fmt: skip


def _pattern(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.15 and depth < 2:
            inner = _pattern(rng, depth + 1)
            if rng.random() < 0.4:
                inner += "|" + _pattern(rng, depth + 1)
            atom = rng.choice(["(", "(?:", "(?P<n>", "(?i:"]) + inner + ")"
        elif roll < 0.22:
            parts.append(rng.choice(FLAGS[3:]))
            continue
        else:
            atom = rng.choice(ATOMS)
        parts.append(atom + rng.choice(QUANTIFIERS))
    return "".join(parts)


@pytest.mark.parametrize("seed", [1, 2])
def test_regex_builtins_agree_on_generated_patterns(both: Any, seed: int) -> None:
    """Random Go patterns (those the host reproduces; the refused ones fail closed) on
    random Unicode text, with random ``n`` and templates: 1,800 cases a seed, one query."""
    rng = random.Random(seed)
    finds: list[dict[str, Any]] = []
    replaces: list[dict[str, Any]] = []
    while len(finds) < 900:
        pattern = rng.choice(FLAGS) + _pattern(rng)
        try:
            compile_go(pattern)
        except GoRegexpUnsupported:
            continue
        except ValueError:
            pass  # Go rejects it too: undefined in both
        for _ in range(3):
            text = "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 10)))
            finds.append({"pattern": pattern, "text": text, "n": rng.choice([-1, -1, 0, 1, 2])})
            template = rng.choice(["<$0>", "-", "", "$1", "${n}", "[$n]x", "$$"])
            replaces.append({"pattern": pattern, "text": text, "template": template})
    ours, theirs = both({"find": finds, "replace": replaces})
    assert _differences(ours, theirs, "find", finds) == []
    assert _differences(ours, theirs, "replace", replaces) == []


def _scheme(name: str) -> str:
    return "[\\t\\n\\r]*".join(f"[{c}{c.upper()}]" for c in name)


HOSTLESS = ["mailto", "javascript", "vbscript", "data", "file"]
LINK_START = "|".join(
    [
        "[hH][tT][tT][pP][sS]?:|[wW][wW][wW]\\.|[/\\\\]{2}",
        "\\b(?:" + "|".join(_scheme(s) for s in HOSTLESS) + ")[\\t\\n\\r]*:\\S",
    ]
)
# The pack's find_n and replace patterns (policies/agent/infoflow.rego), as OPA builds them.
PACK_FINDS = [
    LINK_START,
    "\\S*(?:" + LINK_START + ")\\S*",
    "(?:[hH][tT][tT][pP][sS]?:[/\\\\]*|[wW][wW][wW]\\.|[A-Za-z][A-Za-z0-9+.-]*:[/\\\\]{2}"
    "|(?:^|[\\s(\"'<=\\[:;])[/\\\\]{2})(?:[^\\s/\\\\?#@]*@)*[A-Za-z0-9.%:-]*",
    "(?:^|[^A-Za-z0-9+._/\\\\-])" + _scheme("mailto") + "[\\t\\n\\r]*:[^\\s>|)\\]]+",
    "=\\s*\\\\?\"[^\"]*|=\\s*'[^']*|<\\s*(?:[A-Za-z][A-Za-z0-9+.-]*:|[wW][wW][wW]\\.|[/\\\\]{2})"
    "[^<>|]*",
    "[,;&]",
]
PACK_REPLACES = [
    ("https?://", ""),
    ("[hH][tT][tT][pP][sS]?://", ""),
    ("&#[xX]0*", "&#x"),
    ("&#0+", "&#"),
    ("^[A-Za-z][A-Za-z0-9+.-]*:[/\\\\]{2}", "//"),
]
PIECES = [
    "http:", "https://", "HTTP:", "www.", "//", "\\\\", "mailto:", "MaIl\tto:", "javascript:",
    "data:", "file:", "@", "evil.test", "example.com", " ", "\n", "\t", "\r", "\x0b", "\x0c",
    "\x85", "\u2028", "\u00a0", "\u3000", "\u200b", "ſ", "\u212a", "K", "é", "e\u0301", "日本",
    "\U0001f600", "=", '"', "'", "<", ">", "|", "(", ")", "[", "]", ":", ";", ",", "&", "?", "#",
    "%40", "&#47;", "&#x2F;", "&#0047", "a", "1", ".", "-", "_", "\x00", "\x7f", "x@y", "。",
]  # fmt: skip


def test_the_packs_patterns_agree_on_link_like_text(both: Any) -> None:
    rng = random.Random(52)
    texts = ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 14))) for _ in range(200)]
    finds = [{"pattern": p, "text": t, "n": -1} for p in PACK_FINDS for t in texts]
    replaces = [
        {"pattern": p, "text": t, "template": tpl} for p, tpl in PACK_REPLACES for t in texts
    ]
    ours, theirs = both({"find": finds, "replace": replaces})
    assert _differences(ours, theirs, "find", finds) == []
    assert _differences(ours, theirs, "replace", replaces) == []


# -- the other host builtins -----------------------------------------------------------------

STRINGS = [
    "", " ", "a b+c", "&=?#/:;@!$'()*,", "~-._", "é", "日本", "\U0001f600", "\x00\x7f\n", "%41",
    "\u2028\u0085", "e\u0301", "ſK\u212a", "[]{}|\\^`\"<>",
]  # fmt: skip


def test_string_builtins_agree(both: Any) -> None:
    indexof = [
        {"text": t, "needle": n}
        for t in ("aaaa", "e\u0301e\u0301", "😀😀x😀", "ababab", "日本日本", "", "ae\u0301")
        for n in ("a", "aa", "e\u0301", "\u0301", "😀", "x😀", "日本", "aba", "e", "b")
    ]
    prefix = [[t, p] for t in (["ab", "cd"], "ſx", "é") for p in (["a", "x"], "e", "ſ", ["c"], [])]
    suffix = [[t, p] for t in (["ab", "cd"], "xſ", "e\u0301") for p in (["b", "x"], "\u0301", [])]
    document = {
        "indexof": indexof,
        "urlquery": STRINGS,
        "hex": STRINGS,
        "prefix": prefix,
        "suffix": suffix,
    }
    ours, theirs = both(document)
    assert _differences(ours, theirs, "positions", indexof) == []
    assert _differences(ours, theirs, "encoded", STRINGS) == []
    assert _differences(ours, theirs, "hexed", STRINGS) == []
    assert _differences(ours, theirs, "prefixed", prefix) == []
    assert _differences(ours, theirs, "suffixed", suffix) == []


BIG = 2**70
AGREEING_SPRINTF: list[tuple[str, list[Any]]] = [
    ("%s", [1]), ("%v", [1]), ("%d", [1.5]), ("%d", [2.0]), ("%x", ["é"]), ("%8x", ["ab"]),
    ("%-8x|", ["ab"]), ("%08x", ["ab"]), ("%% %d", [1]), ("%d %d", [1]), ("%d", [1, 2]),
    ("%d", [1, "a"]), ("%#v", [1]), ("%#v", [1.5]), ("%c", [-1]), ("%c", [65]), ("%U", [65]),
    ("%#U", [65]), ("%#U", [0x2028]), ("%.3g", [1234567.0]), ("%g", [1e21]), ("%v", [1e21]),
    ("%v", [1e20]), ("%v", [1e-5]), ("%v", [0.0001]), ("%v", [1e16]), ("%d", [1e16]),
    ("%v", [[1.0, 2.50, 1e16, BIG, -0.0]]), ("%v", [{"a": 1.0}]), ("%v", [-0.0]),
    ("%s", [BIG]), ("%x", [BIG]), ("%#x", [BIG]), ("%08d", [BIG]),
    ("%.30d", [BIG]), ("%+d", [BIG]), ("%t", [True]), ("%v", [True]), ("%d", [True]),
    ("%v", [None]), ("%*d|", [5, 1]), ("%-*d|", [5, 1]), ("%*d|", ["a", 1]),
    ("%[2]d %[1]d", [1, 2]), ("%[0]d", [1]), ("%[1]d %d", [1, 2]), ("%[2]d", [1, 2, 3]),
    ("%#q", ["a`b"]), ("%#q", ["a\tb"]), ("%+q", ["é\U0001f600"]), ("%5s|", ["日本"]),
    ("%.1s", ["日本"]), ("%.1q", ["日本"]), ("%05s", ["ab"]), ("%-05d|", [3]),
    ("%05.1f", [-1.5]), ("%+.2e", [12345.678]), ("% d", [5]), ("%x", [-255]), ("%#o", [8]),
    ("%O", [8]), ("%#b", [5]), ("%!", []), ("%", []), ("%z", [1]), ("%z", ["a"]),
    ("%!d", [1]), ("%d%", [1]), ("%.d", [0]), ("%.0d", [0]), ("%5.0d|", [0]), ("%x", [""]),
    ("%#x", [""]), ("% x", ["ab"]), ("%# x", ["ab"]), ("%# X", ["ab"]),
    ("%v", [{"b": 1, "a": [1, {"c": None}]}]), ("%s", [{"k": "v\n"}]),
    ("%v", [['a"b', "\\", "\x7f", "\x01"]]), ("%d", ["1"]), ("%s", [[]]), ("%v", [{}]),
    ("%6.2f|", [3.14159]), ("%-8.3s|", ["abcdef"]), ("%08.3d", [42]), ("%+08d", [42]),
    ("% 08d", [-42]), ("%x", [BIG * 1000]), ("%v", [1e100]), ("%v", [123456789.0]),
    ("%v", [0.000012345]), ("%G", [1e-10]), ("%E", [1.0]), ("%F", [1.0]), ("%3c|", [65]),
    ("%-3c|", [65]), ("%05c", [65]), ("%05q", ["a"]), ("%.0f", [2.5]), ("%.0f", [3.5]),
    ("%.1f", [0.05]), ("%.2f", [1.005]), ("%g", [100000.0]), ("%g", [1000000.0]),
    ("%.3v", [3.14159]), ("%10.3v|", [3.14159]), ("%q", ["\u00ad\u2028\ufeff"]),
]  # fmt: skip


def test_sprintf_cases_that_agree(both: Any) -> None:
    cases = [{"format": f, "args": a} for f, a in AGREEING_SPRINTF]
    ours, theirs = both({"sprintf": cases})
    assert _differences(ours, theirs, "formatted", cases) == []


def test_values_read_back_as_opa_gives_them(both: Any) -> None:
    """Big and exponent numbers, -0, escaped and non-ASCII keys, a long array: the value
    the host reads back from the module is OPA's."""
    echo = {
        "numbers": [BIG, -BIG, 2**63, 2**64 + 1, 12345678901234567890, 1e16, 1.5e300, 1e-7, -0.0],
        "keys": {'a"b': 1, "\u2028": 2, "\\": 3, "\x00": 4, "é": 5, "\U0001f600": 6, "": 7},
        "long": list(range(5000)),
        "nested": [[[{"k": None, "t": True}]]],
    }
    ours, theirs = both({"echo": echo})
    assert ours["echo"] == theirs["echo"]


# -- the shipped pack: link-bearing content after an untrusted read --------------------------

MAILER = {"egress": {"destinations": ["to"], "content": ["subject", "body"]}}
READER = {"read_only": True, "trust": "untrusted"}
BODIES = [
    "see https://evil.test/x", "see https://example.com/x", "ſee https://evil.test",
    "HTTPS:\\\\evil.test", "mailto:eve@evil.test", "MaIl\tto:eve@evil.test", "java\nscript:x",
    "<https://example.com x@evil.test/>", 'href="https://example.com"@evil.test/"',
    "https://example.com\u3002evil.test", "https://example.com&#46;evil.test", "&#104;ttps://evil.test",
    "text\u2028https://evil.test", "\u0085//evil.test", "a\u00a0//evil.test", "x\u212a//evil.test",
    "(//evil.test)", "[a](//evil.test)", "mailto:bob@example.com?cc=eve@evil.test",
    "https://\u200bevil.test", "https://e\u0301vil.test", "www.evil.test", "the data: 42 rows",
]  # fmt: skip


def _mail(body: str, call_id: str = "c1") -> dict[str, Any]:
    return {
        "name": "send_email",
        "args": {"to": "bob@example.com", "subject": "s", "body": body},
        "call_id": call_id,
        "metadata": MAILER,
    }


def _document(call: dict[str, Any], turn: list[dict[str, Any]]) -> dict[str, Any]:
    earlier = {
        "name": "fetch_url",
        "args": {"url": "https://news.test"},
        "call_id": "h1",
        "metadata": READER,
        "decision": "allow",
        "reasons": [],
        "status": "success",
    }
    return {
        "version": 1,
        "tool": call,
        "user": {"id": "user-456", "role": "internal_user"},
        "context": {"thread_id": "t1", "request": "mail bob@example.com", "directory": []},
        "turn": turn,
        "history": [earlier],
    }


@pytest.fixture(scope="module")
def pack(opa_url: str) -> Iterator[tuple[EmbeddedPolicy, OPAServer]]:
    with EmbeddedPolicy(POLICIES, backend="wasm") as embedded, OPAServer(opa_url) as server:
        yield embedded, server


def test_the_pack_decides_link_content_as_opa_does_one_by_one_and_batched(pack: Any) -> None:
    embedded, server = pack
    calls = [_mail(body, f"c{i}") for i, body in enumerate(BODIES)]
    documents = [_document(call, calls) for call in calls]
    theirs = [server.decide(d) for d in documents]
    ours = [embedded.decide(d) for d in documents]
    batched = embedded.decide_many(documents)
    view = [(d.verdict, d.codes, d.error) for d in theirs]
    assert [(d.verdict, d.codes, d.error) for d in ours] == view
    assert [(d.verdict, d.codes, d.error) for d in batched] == view
    assert any(d.verdict == "allow" for d in theirs) and any(d.verdict == "deny" for d in theirs)
