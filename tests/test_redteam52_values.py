"""Red team 52: values the embedded engine hands back, against OPA on the same policy.

Each test loads one small module into the session's OPA server and into an
``EmbeddedPolicy`` (``backend="wasm"``) and compares the two answers.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from langchain_opa_guard import EmbeddedPolicy, OPAServer


def _opa(url: str, method: str, path: str, body: bytes) -> Any:
    """One request to the OPA server (``PUT`` a policy, ``POST`` a query, ``DELETE``)."""
    request = urllib.request.Request(f"{url}/v1/{path}", data=body or None, method=method)
    request.add_header("Content-Type", "text/plain" if method == "PUT" else "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _engines(
    opa_url: str, directory: Path, name: str, source: str, policy: str, entrypoints: list[str]
) -> tuple[EmbeddedPolicy, OPAServer]:
    (directory / "p.rego").write_text(source)
    _opa(opa_url, "PUT", f"policies/{name}", source.encode())
    embedded = EmbeddedPolicy(
        directory, policy=policy, backend="wasm", timeout=30.0, entrypoints=entrypoints
    )
    return embedded, OPAServer(opa_url, policy=policy)


# -- sets of objects: the host orders them otherwise than OPA ---------------------------------

SETS = """package redteam52.sets

objects := {{"a": 2, "b": 1}, {"a": 1, "c": 0}}

printed := sprintf("%v", [objects])

sorted_in_guest := sort([{"a": 2, "b": 1}, {"a": 1, "c": 0}])

deny contains {"code": "b_second", "message": "second"}

deny contains {"code": "a_first", "message": "first", "zz_detail": 1}

decision := {"allow": false, "reasons": deny}
"""


@pytest.fixture(scope="module")
def sets(opa_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("redteam52_sets")
    points = ["redteam52/sets/objects", "redteam52/sets/printed", "redteam52/sets/sorted_in_guest"]
    embedded, server = _engines(
        opa_url, directory, "redteam52_sets", SETS, "redteam52/sets/decision", points
    )
    with embedded, server:
        yield embedded, server
    _opa(opa_url, "DELETE", "policies/redteam52_sets", b"")


def test_a_set_of_objects_is_read_back_in_opas_order(sets: Any, opa_url: str) -> None:
    """What was done: a rule's value is the set {{"a": 2, "b": 1}, {"a": 1, "c": 0}};
    queried embedded and from OPA. Observed: embedded lists {"a": 2, "b": 1} first, OPA
    {"a": 1, "c": 0} (OPA compares two objects key by key, each key then its value:
    "a" = "a", then 1 < 2; the host's ``opa_sort_key`` compares all the keys first, and
    ["a", "b"] < ["a", "c"]). The guest itself sorts as OPA does (``sort_in_guest``: the
    same in both); only the host's reordering of a set read back differs. Expected: OPA's
    order."""
    embedded, _server = sets
    body = json.dumps({"input": {}}).encode()
    for rule in ("sorted_in_guest", "objects"):
        ours = embedded.query(f"redteam52/sets/{rule}", {})
        theirs = _opa(opa_url, "POST", f"data/redteam52/sets/{rule}", body)["result"]
        assert ours == theirs, rule


def test_sprintf_prints_a_set_of_objects_in_opas_order(sets: Any, opa_url: str) -> None:
    """What was done: sprintf("%v", [{{"a": 2, "b": 1}, {"a": 1, "c": 0}}]) in both engines.
    Observed: embedded '{{"a": 2, "b": 1}, {"a": 1, "c": 0}}', OPA
    '{{"a": 1, "c": 0}, {"a": 2, "b": 1}}' (the same ordering as above, in ``rego_string``).
    Expected: OPA's text."""
    embedded, _server = sets
    body = json.dumps({"input": {}}).encode()
    theirs = _opa(opa_url, "POST", "data/redteam52/sets/printed", body)["result"]
    assert embedded.query("redteam52/sets/printed", {}) == theirs


def test_a_deny_set_of_coded_reasons_keeps_opas_order(sets: Any) -> None:
    """What was done: a decision whose reasons are a set of two coded objects, one with an
    extra key ({"code": "a_first", "message": "first", "zz_detail": 1} and {"code":
    "b_second", "message": "second"}), decided by both engines. Observed: embedded reasons
    ("second", "first") and codes ("b_second", "a_first"); OPA ("first", "second") and
    ("a_first", "b_second"). Expected: the embedded decision's reasons and codes in OPA's
    order (the first reason is what a user is shown)."""
    embedded, server = sets
    ours, theirs = embedded.decide({}), server.decide({})
    assert theirs.error is None and ours.error is None
    assert (ours.reasons, ours.codes) == (theirs.reasons, theirs.codes)


# -- numbers past float64 in the guest (OPA's wasm runtime, not the host's Python) -----------

NUMBERS = """package redteam52.numbers

# Allowed only with an amount the policy can read, at most 1000.
default decision := {"allow": false, "reasons": ["amount unreadable or above 1000"]}

decision := {"allow": true, "reasons": []} if to_number(input.tool.args.amount) <= 1000

values["floor"] := floor(-0.5)

values["product"] := 1e308 * 10

values["to_number"] := to_number("1e400")
"""


@pytest.fixture(scope="module")
def numbers(opa_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("redteam52_numbers")
    embedded, server = _engines(
        opa_url,
        directory,
        "redteam52_numbers",
        NUMBERS,
        "redteam52/numbers/decision",
        ["redteam52/numbers/values"],
    )
    with embedded, server:
        yield embedded, server
    _opa(opa_url, "DELETE", "policies/redteam52_numbers", b"")


# Known and documented (README, "Engines"): OPA's WebAssembly target computes numbers past
# float64 in floating point (the module OPA compiled, not the host's Python). Strict, so that
# the day OPA's wasm runtime agrees these are turned on.
GUEST_FLOATS = pytest.mark.xfail(
    strict=True, reason="OPA's wasm target reads numbers past float64 as infinities: upstream"
)


@GUEST_FLOATS
def test_an_amount_past_float64_is_not_allowed_embedded_where_opa_refuses(numbers: Any) -> None:
    """What was done: a policy allows a call only when ``to_number(amount) <= 1000``; the
    amount is the string "-1e400". Observed: OPA's ``to_number`` is undefined for a number
    past float64 (the call is denied: the default); the compiled module reads it as -inf,
    -inf <= 1000, and the embedded engine ALLOWS the call. Expected: the embedded decision
    is OPA's (deny). The cause is in OPA's wasm runtime (the guest), not the host's Python:
    the embedded engine runs what ``opa build -t wasm`` compiled."""
    embedded, server = numbers
    call = {"name": "transfer", "args": {"amount": "-1e400"}, "call_id": "c1"}
    document = {"tool": call, "turn": [call]}
    theirs = server.decide(document)
    assert theirs.error is None and not theirs.allow
    assert embedded.decide(document).allow is theirs.allow


@GUEST_FLOATS
@pytest.mark.parametrize("key", ["floor", "product", "to_number"])
def test_guest_arithmetic_matches_opa(numbers: Any, opa_url: str, key: str) -> None:
    """What was done: floor(-0.5), 1e308 * 10 and to_number("1e400") in both engines.
    Observed: embedded -1, inf and -inf/inf; OPA 0, 10^309 (exact) and undefined.
    Expected: OPA's values (undefined stays undefined). Guest-side, as above."""
    embedded, _server = numbers
    ours = embedded.query("redteam52/numbers/values", {}) or {}
    body = json.dumps({"input": {}}).encode()
    theirs = _opa(opa_url, "POST", "data/redteam52/numbers/values", body)["result"]
    assert ours.get(key, "<undefined>") == theirs.get(key, "<undefined>")
