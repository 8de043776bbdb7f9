"""The builtins the embedded engine provides to compiled policies itself (``indexof_n``,
``regex.find_n``, ``regex.replace``) against a real OPA server: Go's regexp syntax and
matching rules, code point indexes, ``$`` templates, empty matches, patterns Go rejects.
Patterns that Python cannot match as Go does are refused: at load when they are constants,
else the evaluation fails closed."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import POLICIES, TEST_POLICIES

from langchain_opa_guard import EmbeddedPolicy, ErrorType, OPAServer
from langchain_opa_guard.engines.wasm.host_builtins import UnsupportedBuiltinError

PATH = "regex_cases/results"

PATTERNS = [
    # ASCII-only classes and boundaries, as in Go
    r"\w+",
    r"\W+",
    r"\d",
    r"\D+",
    r"\s",
    r"\S+",
    r"\b",
    r"\B",
    r"\bc",
    r"[[:alpha:]]+",
    r"[[:^space:]]+",
    r"[\w-]+",
    r"[^\d\s]+",
    # anchors and dot
    "^",
    "$",
    "^a",
    "a$",
    r"(?m)^\w",
    "(?m)$",
    r"\Aa|c\z",
    ".",
    "(?s).",
    "a.c",
    # case folding
    "(?i)k",
    "(?i)s+",
    "(?i)[a-z]+",
    "(?i)straße",
    "(?i)\u03c3",  # sigma
    "(?i)ǆ",
    "(?i)i",
    r"(?i)\w+",
    "(?i)[^k]",
    r"(?i)[\W]",
    "a(?i)b|c",
    # empty matches, greediness, counts
    "",
    "x*",
    "a*",
    "a*?",
    "a??",
    "|a",
    "(?U)a+",
    "(?U)a+?",
    "a{2,3}",
    "a{2,3}?",
    "a{,2}",
    "a{01}",
    "{",
    # groups, for templates
    r"(\w)(\w)?",
    r"(?P<first>\w)(?P<rest>\w*)",
    "(?<x>a)|(?<x>b)",
    "(a)|(b)",
    "(?P<1>a)",
    # escapes and classes
    r"\101",
    r"\x41",
    r"\x{1F680}",
    r"\Q.*\E",
    r"\.",
    r"\_",
    r"\n|\v",
    "[]a]",
    "[a-]",
    "[^]a]",
    r"https?://",
    r"(https?://|www\.)[^\s\"'<>()\[\]{}]+",
    # rejected by Go: undefined on both engines
    "(",
    ")",
    "a**",
    "a*+",
    r"\1",
    "(?=a)",
    "(?<=a)",
    r"\Z",
    "a{1001}",
    "(a{100}){11}",
    "[z-a]",
    "(?P<>a)",
    r"\e",
    "[[:foo:]]",
    "(?i",
    "x{2}{3}",
    r"\C",
    "[a",
]
TEXTS = [
    "",
    "a",
    "aaa",
    "abc abc",
    "Kelvin \u212a and \u017f long s",
    "straße STRASSE",
    "İstanbul \u0131i",  # dotless i
    "é café École",
    "tab\tsep\vvt\nnl\r\n",
    "🚀 rocket🚀",
    "x_y-z 123",
    "{01} a{,2} a{",
    "$1 ${name}",
    "ǅ ǆ Ǆ",
    "Σίσυφος ς",
    "\u0085\u00a0nbsp",
    "see http://a.b or https://c.d/x?y=1, www.e.f.",
    "a.c abc a\nc",
    ".*",
    "AAAb",
]
TEMPLATES = ["<$0>", "[$1]", "${1}x", "$1x", "${first}:${rest}", "${x}", "$$", "$", "${", "$é"]
NEEDLES = ["a", "é", "🚀", "aa", " ", "\n", "", "ab", "STRASSE"]
NUMBERS = [-1, -1, 0, 1, 2, -5]


def cases() -> list[dict[str, Any]]:
    templates, needles, numbers = (itertools.cycle(x) for x in (TEMPLATES, NEEDLES, NUMBERS))
    return [
        {
            "pattern": pattern,
            "text": text,
            "n": next(numbers),
            "template": next(templates),
            "needle": next(needles),
        }
        for pattern in PATTERNS
        for text in TEXTS
    ]


@pytest.fixture(scope="module")
def engine() -> Any:
    with EmbeddedPolicy(  # a long deadline: thousands of host calls on a loaded machine
        TEST_POLICIES,
        policy="shapes/object_decision",
        entrypoints=[PATH],
        backend="wasm",
        timeout=60,
    ) as engine:
        yield engine


def test_the_module_calls_out_for_these_builtins(engine: EmbeddedPolicy) -> None:
    needed = set(engine._state.evaluator.module.builtins)
    assert {"indexof_n", "regex.find_n", "regex.replace"} <= needed


def test_host_builtins_agree_with_opa(engine: EmbeddedPolicy, opa_url: str) -> None:
    server = OPAServer(opa_url, policy="shapes/object_decision")
    document = {"cases": cases()}
    theirs, ours = server.query(PATH, document), engine.query(PATH, document)
    for builtin in ("find", "replace", "positions"):
        expected, got = theirs[builtin], ours[builtin]
        wrong = [
            (document["cases"][int(k)], expected.get(k), got.get(k))
            for k in sorted(set(expected) | set(got), key=int)
            if expected.get(k) != got.get(k)
        ]
        assert not wrong, (builtin, len(wrong), wrong[:10])
    # Both engines leave the calls Go rejects undefined, and answer the others.
    total = len(document["cases"])
    assert 0.6 * total < len(theirs["find"]) < 0.95 * total
    assert 0.6 * total < len(theirs["replace"]) < 0.95 * total
    assert 0.8 * total < len(theirs["positions"]) < total


def test_some_answers_spelled_out(engine: EmbeddedPolicy) -> None:
    """What parity above means on a few cases, written down."""
    document = {
        "cases": [
            {"pattern": r"\w+", "text": "é café", "n": -1, "template": "[$0]", "needle": "é"},
            {"pattern": "a*", "text": "baaab", "n": -1, "template": "-", "needle": "aa"},
            {"pattern": "(?i)k", "text": "k\u212aK", "n": 2, "template": "$1x", "needle": "K"},
            {"pattern": "(", "text": "x", "n": -1, "template": "", "needle": ""},
        ]
    }
    result = engine.query(PATH, document)
    assert result["find"] == {
        "0": ["caf"],  # \w is ASCII-only
        "1": ["", "aaa", ""],  # no empty match right after a match
        "2": ["k", "\u212a"],  # n = 2; the Kelvin sign folds to k
    }
    # "$1x" names a group "1x", which does not exist: empty; "(" is undefined, as in OPA
    assert result["replace"] == {"0": "é [caf]é", "1": "-b-b-", "2": ""}
    assert result["positions"] == {"0": [0, 5], "1": [1, 2], "2": [2]}  # code points


def test_a_pattern_python_cannot_match_as_go_fails_closed(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "policy.rego").write_text(
        "package agent.authz\n\n"
        'decision := {"allow": true, "reasons": regex.find_n(input.pattern, input.text, -1)}\n'
    )
    engine = EmbeddedPolicy(root, backend="wasm", max_instances=1)
    assert engine.decide({"pattern": "b+", "text": "abba"}).reasons == ("bb",)
    for pattern in (r"\p{Greek}+", "(a*)+"):  # valid for Go, not reproduced here
        decision = engine.decide({"pattern": pattern, "text": "αβ aa"})
        assert (decision.allow, decision.error) == (False, ErrorType.ENGINE)
        assert "regex.find_n" in decision.reasons[0]
    assert engine.decide({"pattern": "(", "text": "x"}).error == ErrorType.UNDEFINED  # as OPA
    assert engine.decide({"pattern": "a", "text": "aa"}).reasons == ("a", "a")


def test_constant_patterns_python_cannot_match_as_go_are_refused_at_load(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "policy.rego").write_text(
        "package agent.authz\n\n"
        '# regex.replace(input.x, `\\pL`, "") in a comment is not a call\n'
        'decision := {"allow": true, "reasons": [\n'
        '\tregex.replace(input.x, "https?://", ""),\n'
        '\tregex.replace(input.x, `\\p{Greek}`, ""),\n'
        "]}\n"
    )
    with pytest.raises(UnsupportedBuiltinError) as info:
        EmbeddedPolicy(root, backend="wasm")
    message = str(info.value)
    assert "regex.replace (policy.rego:6)" in message and "policy.rego:5" not in message
    assert "policy.rego:3" not in message


def test_the_shipped_policies_load_on_wasm() -> None:
    with EmbeddedPolicy(POLICIES, backend="wasm") as engine:
        assert engine.backend == "wasm"
        assert {"regex.find_n", "regex.replace", "indexof_n"} <= set(
            engine._state.evaluator.module.builtins
        )


LINK_PATTERN = (
    r"""(?:[hH][tT][tT][pP][sS]?:[/\\]*|[wW][wW][wW]\.|[A-Za-z][A-Za-z0-9+.-]*:[/\\]{2}"""
    r"""|(?:^|[\s("'<=\[:;])[/\\]{2})(?:[^\s/\\?#@]*@)*[A-Za-z0-9.%:-]*"""
)
LONG_TEXTS = [
    "x" * 100_000,
    "a.b-c+d" * 15_000,
    "see http://a.test/x and www.b.test, ftp://c.test " * 2_000,
    "é" + "x" * 50_000 + " //évil.test/ " + "ü" * 50_000 + "\u212a",
    "<a href='https://x.test/" + "y" * 50_000 + "'>" + "=  '" * 10_000,
    "Σ" * 30_000 + " STRASSE straße " * 2_000,
]
LONG_PATTERNS = [
    LINK_PATTERN,
    r"""=\s*\\?"[^"]*|=\s*'[^']*|<\s*(?:[A-Za-z][A-Za-z0-9+.-]*:|[wW][wW][wW]\.|[/\\]{2})[^<>|]*""",
    r"^[A-Za-z][A-Za-z0-9+.-]*:[/\\]{2}",
    r"\B",
    r"(?i)straße|k",
    r"[a-z]+\.",
]


def test_long_texts_agree_with_opa_in_linear_time(opa_url: str) -> None:
    """Go's RE2 is linear in the text; so is the embedded engine on these (where a search
    that tries every start position in turn is quadratic: minutes for 100,000 x)."""
    server = OPAServer(opa_url, policy="shapes/object_decision", timeout=60)
    templates, needles = itertools.cycle(TEMPLATES), itertools.cycle(["évil", "=  '", "STRASSE"])
    cases = [
        {"pattern": p, "text": t, "n": -1, "template": next(templates), "needle": next(needles)}
        for p in LONG_PATTERNS
        for t in LONG_TEXTS
    ]
    opa_took = took = 0.0
    with EmbeddedPolicy(
        TEST_POLICIES, policy="shapes/object_decision", entrypoints=[PATH], timeout=30
    ) as engine:
        for case in cases:  # one by one: OPA's replies stay under the client's 1 MB
            started = time.monotonic()
            theirs = server.query(PATH, {"cases": [case]})
            opa_took += time.monotonic() - started
            started = time.monotonic()
            ours = engine.query(PATH, {"cases": [case]})
            took += time.monotonic() - started
            assert theirs == ours, (case["pattern"], case["text"][:40])
            assert set(theirs["find"]) == set(theirs["replace"]) == {"0"}
    assert took < max(20, 5 * opa_took), (took, opa_took)
