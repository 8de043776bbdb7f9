"""Red team 52: ``sprintf`` in the embedded engine (Python's ``go_sprintf``) against OPA.

What was done: one small policy maps each case of ``input.cases`` to
``sprintf(c.format, c.args)``; the same module is loaded into the session's OPA server and into
an ``EmbeddedPolicy`` (``backend="wasm"``, where ``sprintf`` is a host builtin), and the one
answer of each engine is compared case by case.

Observed: each case below formats differently embedded (the ``embedded`` value in the
failure) than in OPA; expected: the text OPA gives (Go's ``fmt.Sprintf``). The shipped pack
does not call ``sprintf`` (its messages use ``concat``), so these change a policy author's
reasons or any comparison made on a formatted string, not the shipped decisions.

Fixed: ``go_sprintf`` is a port of Go's fmt; each case of ``CASES`` now equals OPA's text.
The two cases of ``REFUSED`` quote a letter of Unicode 15 that Python 3.11's tables (14.0) do
not know: the embedded engine refuses them (the evaluation fails closed) rather than escape
the letter where Go prints it.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.decision import EngineError

PACKAGE = "redteam52.sprintf"
SOURCE = f"""package {PACKAGE}

out[i] := sprintf(c.format, c.args) if some i, c in input.cases
"""
BIG = 2**70

# (id, format, arguments): each formats otherwise in the embedded engine than in OPA.
CASES: list[tuple[str, str, list[Any]]] = [
    ("precision of %x counts bytes", "%.1x", ["é"]),
    ("%T of a number", "%T", [1]),
    ("%T of a string", "%T", ["a"]),
    ("%T of a float", "%T", [1.5]),
    ("%T of a big integer", "%T", [BIG]),
    ("%#v of a string is quoted", "%#v", ["a"]),
    ("%+v of a number has no sign", "%+v", [5]),
    ("%q of a single quote", "%q", [39]),
    ("%q of a double quote", "%q", [34]),
    ("%+q of a non-ASCII rune", "%+q", [233]),
    ("%c of a surrogate", "%c", [0xD800]),
    ("%x of a float", "%x", [1.5]),
    ("%b of a float", "%b", [1.5]),
    ("%#g keeps zeros", "%#g", [1.0]),
    ("%c of a big integer", "%c", [BIG]),
    ("%q of a big integer", "%q", [BIG]),
    ("%U of a big integer", "%U", [BIG]),
    ("%e of a big integer", "%e", [BIG]),
    ("%t of a big integer", "%t", [BIG]),
    ("%f of a big integer", "%f", [BIG]),
    ("negative * width pads left", "%*d|", [-5, 1]),
    ("precision from an argument", "%.*d|", [3, 1]),
    ("an index past the arguments", "%[3]d", [1, 2]),
    ("%#q of a line separator", "%#q", ["a\u2028b"]),
    ("%#q of a soft hyphen", "%#q", ["a\u00adb"]),
]

# (id, format, arguments, OPA's text): cases the embedded engine refuses, and what a faithful
# answer would be. U+1E030 (MODIFIER LETTER CYRILLIC SMALL A) is new in Unicode 15: Go prints
# it as it is inside quotes, Python 3.11's tables would escape it as \U0001e030.
REFUSED: list[tuple[str, str, list[Any], str]] = [
    ("%q of a letter newer than Python's tables", "%q", ["\U0001e030"], '"\U0001e030"'),
    ("%v of an array of such a letter", "%v", [["\U0001e030"]], '["\U0001e030"]'),
]


def _opa(url: str, method: str, path: str, body: bytes) -> Any:
    """One request to the OPA server (``PUT`` a policy, ``POST`` a query, ``DELETE``)."""
    request = urllib.request.Request(f"{url}/v1/{path}", data=body or None, method=method)
    request.add_header("Content-Type", "text/plain" if method == "PUT" else "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


@pytest.fixture(scope="module")
def answers(opa_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("redteam52_sprintf")
    (directory / "p.rego").write_text(SOURCE)
    _opa(opa_url, "PUT", "policies/redteam52_sprintf", SOURCE.encode())
    cases = [{"format": f, "args": a} for _, f, a in CASES]
    path = PACKAGE.replace(".", "/") + "/out"
    with EmbeddedPolicy(
        directory, policy=path, backend="wasm", timeout=30.0, entrypoints=[path]
    ) as engine:
        embedded = engine.query(path, {"cases": cases})
    query = json.dumps({"input": {"cases": cases}}).encode()
    theirs = _opa(opa_url, "POST", f"data/{path}", query).get("result")
    yield embedded, theirs
    _opa(opa_url, "DELETE", "policies/redteam52_sprintf", b"")


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_sprintf_formats_as_opa_does(answers: Any, index: int) -> None:
    """sprintf(format, args) embedded equals OPA's text for the same case."""
    embedded, theirs = answers
    _, form, args = CASES[index]
    key = str(index)
    assert (embedded or {}).get(key, "<undefined>") == (theirs or {}).get(key, "<undefined>"), (
        form,
        args,
    )


@pytest.fixture(scope="module")
def refused_answers(opa_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Each refused case evaluated alone (a refusal fails the whole evaluation): the
    embedded engine's error, or its answer, and OPA's answer."""
    directory = tmp_path_factory.mktemp("redteam52_sprintf_refused")
    (directory / "p.rego").write_text(SOURCE)
    _opa(opa_url, "PUT", "policies/redteam52_sprintf_refused", SOURCE.encode())
    path = PACKAGE.replace(".", "/") + "/out"
    answers: list[tuple[Any, Any]] = []
    with EmbeddedPolicy(
        directory, policy=path, backend="wasm", timeout=30.0, entrypoints=[path]
    ) as engine:
        for _, form, args, _ in REFUSED:
            cases = [{"format": form, "args": args}]
            embedded: Any
            try:
                embedded = engine.query(path, {"cases": cases})
            except EngineError as exc:
                embedded = exc
            query = json.dumps({"input": {"cases": cases}}).encode()
            theirs = _opa(opa_url, "POST", f"data/{path}", query).get("result")
            answers.append((embedded, theirs))
    yield answers
    _opa(opa_url, "DELETE", "policies/redteam52_sprintf_refused", b"")


@pytest.mark.parametrize("index", range(len(REFUSED)), ids=[c[0] for c in REFUSED])
def test_sprintf_refuses_what_python_cannot_quote_as_go(refused_answers: Any, index: int) -> None:
    """The embedded evaluation fails closed (``EngineError``: an ``engine_error`` decision)
    where OPA prints the letter itself: ``"\U0001e030"`` and ``["\U0001e030"]``, the letter
    between the quotes (what a faithful answer would be, ``REFUSED``'s last column)."""
    embedded, theirs = refused_answers[index]
    assert isinstance(embedded, EngineError), embedded
    assert "sprintf" in str(embedded) and "Unicode tables" in str(embedded)
    assert theirs == {"0": REFUSED[index][3]}
