"""Host builtins read their arguments from OPA's value structs in the guest's memory and
write string results there directly (guest_values): the same values as the guest's own
``opa_value_dump``/``opa_value_parse`` see, the same answers as ``opa eval``, with the
layout probe on and off; repeated calls within one evaluation answer once; a guest call
that traps inside a builtin fails closed; dropped instances are freed."""

from __future__ import annotations

import ctypes
import gc
import json
import subprocess
import tarfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opa_process import opa_binary

from langchain_opa_guard import EmbeddedPolicy, ErrorType
from langchain_opa_guard.engines.wasm import evaluator as wasm_evaluator
from langchain_opa_guard.engines.wasm import runtime
from langchain_opa_guard.engines.wasm.bundles import SHIPPED_BUNDLE
from langchain_opa_guard.engines.wasm.guest_values import (
    GuestLayoutError,
    GuestMemory,
    string_block,
)
from langchain_opa_guard.engines.wasm.host_builtins import HOST_BUILTINS
from langchain_opa_guard.engines.wasm.rego_values import Number
from langchain_opa_guard.engines.wasm.runtime import WasmInstance, WasmModule, compiled_module

LARGE = "a\u00e9\U0001f600\t" * 50_000  # 500 KB of UTF-8

STRINGS = [
    "",
    "a",
    "plain text",
    "\u00e9",
    "\u65e5\u672ca\u8a9e",
    "\U0001f600a\U0001f600",
    "tab\ta\nnewline\rreturn",
    "\x00a\x01\x1f\x7f",
    '"quoted" \\back\\ /slash/',
    "\u2028a\u2029\ufeff\u00ad",
    "https://news.example.org/a?b=c&d=e#f",
    LARGE,
]

VALUES: list[Any] = [
    *STRINGS,
    0,
    1,
    -1,
    1.5,
    2.50,
    1e-3,  # (OPA takes 1000.0 as an integer count where the host does not: left out)
    12345678901234567890,
    -9223372036854775808,
    True,
    False,
    None,
    [],
    ["a", 1, [True, None, ["\u00e9"]], []],
    {"a": "a", "b": [1]},
]


def shipped_wasm() -> bytes:
    with tarfile.open(SHIPPED_BUNDLE) as bundle:
        member = bundle.extractfile("/policy.wasm")
        assert member is not None
        return member.read()


@pytest.fixture(scope="module")
def instance() -> WasmInstance:
    return compiled_module(shipped_wasm()).instance(
        b"{}", memory_limit=None, host_builtins=HOST_BUILTINS
    )


def test_the_layout_probe_passes_on_the_shipped_module() -> None:
    """OPA's value structs in the shipped module are the ones guest_values reads."""
    assert compiled_module(shipped_wasm()).direct_values is True


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:30])
def test_direct_reads_match_the_guests_own_dump(instance: WasmInstance, value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False).encode()
    address = instance._parse_value(None, text)
    dumped = instance._dumped_value(None, address)
    memory = GuestMemory(
        *instance._memory_view(), fallback=lambda a: instance._dumped_value(None, a)
    )
    read = memory.value(address)
    assert runtime._identical(read, dumped)
    if isinstance(value, str):
        assert read == value and type(read) is str
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert type(read) is Number


def test_objects_and_sets_go_to_the_fallback(instance: WasmInstance) -> None:
    address = instance._parse_value(None, b'{"a": {1, 2}}')
    memory = GuestMemory(*instance._memory_view(), fallback=None)
    with pytest.raises(GuestLayoutError):
        memory.value(address)
    seen: list[int] = []

    def fallback(a: int) -> Any:
        seen.append(a)
        return instance._dumped_value(None, a)

    memory = GuestMemory(*instance._memory_view(), fallback=fallback)
    assert memory.value(address) == {"a": (Number(1), Number(2))} and seen == [address]


@pytest.mark.parametrize("text", STRINGS, ids=lambda v: repr(v)[:30])
def test_direct_writes_read_back_through_the_guest(instance: WasmInstance, text: str) -> None:
    address = instance._write_string(None, text)
    assert instance._dumped_value(None, address) == text
    # And the guest's own parser agrees that it is that string: equal as a set member.
    set_address = instance._parse_value(None, json.dumps([text], ensure_ascii=False).encode())
    assert instance._dumped_value(None, set_address) == [text]


def test_a_value_pointing_outside_memory_is_a_layout_error() -> None:
    block = string_block(16, b"abc")
    broken = block[:8] + (10**9).to_bytes(4, "little")  # the text pointer, far away
    buffer = bytearray(bytes(16) + broken + bytes(16))

    raw = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    memory = GuestMemory(ctypes.addressof(raw), len(buffer), fallback=None)
    with pytest.raises(GuestLayoutError):
        memory.value(16)
    with pytest.raises(GuestLayoutError):
        memory.value(len(buffer) + 4)


# -- the builtins on both paths, against opa eval -----------------------------------------

POLICY = """package hostvals

variant := %d

results["replace"][k] := regex.replace(v, "a", "<$0>") if some k, v in input.values
results["find"][k] := regex.find_n("[^a]", v, 3) if some k, v in input.values
results["find_n"][k] := regex.find_n("a", "aaaa", v) if some k, v in input.values
results["positions"][k] := indexof_n(v, "a") if some k, v in input.values
results["needle"][k] := indexof_n("banana", v) if some k, v in input.values
results["sprintf"][k] := sprintf("%%v|%%s|%%d", [v, v, v]) if some k, v in input.values
results["set"] := sprintf("%%v", [{x | some x in input.values; is_string(x); count(x) < 20}])
"""


def opa_eval(policy: Path, document: dict[str, Any]) -> Any:
    input_file = policy.parent / "input.json"
    input_file.write_text(json.dumps(document))
    out = subprocess.run(
        [opa_binary(), "eval", "-d", str(policy), "-i", str(input_file), "data.hostvals.results"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)["result"][0]["expressions"][0]["value"]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "dump"])
def test_builtins_agree_with_opa_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    if not direct:  # the layout probe fails: every value goes through the guest's dump
        monkeypatch.setattr(WasmInstance, "probe_direct_values", lambda self: False)
    root = tmp_path / "p"
    root.mkdir()
    policy = root / "policy.rego"
    policy.write_text(POLICY % (1 if direct else 2))  # another module for each path
    values = [v for v in VALUES if v is not LARGE] + ["a" * 20_000 + "b"]
    document = {"values": {str(i): v for i, v in enumerate(values)}}
    with EmbeddedPolicy(
        root, policy="hostvals/results", entrypoints=["hostvals/results"], timeout=30
    ) as engine:
        assert engine._state.evaluator.module.direct_values is direct
        assert {"regex.replace", "regex.find_n", "indexof_n"} <= set(
            engine._state.evaluator.module.builtins
        )
        ours = engine.query("hostvals/results", document)
    theirs = opa_eval(policy, document)
    assert ours == theirs
    # Non-strings are errors in OPA, so undefined: only the strings have answers.
    strings = {k for k, v in document["values"].items() if isinstance(v, str)}
    assert set(theirs["replace"]) == strings and set(theirs["positions"]) == strings
    assert theirs["replace"]["1"] == "<a>"


# -- memoized within an evaluation ---------------------------------------------------------

MEMO_POLICY = """package agent.authz

decision := {"allow": true, "reasons": [
\tregex.replace(input.s, "a", "b"),
\tregex.replace(input.s, "a", "b"),
\tregex.replace(input.t, "a", "b"),
\tnumber_or_string,
]}

number_or_string := regex.replace(input.n, "1", "x")

number_or_string := "undefined for a number" if not regex.replace(input.n, "1", "x")
"""


def test_a_repeated_call_answers_once_per_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[Any]] = []
    original: Callable[[list[Any]], Any] = HOST_BUILTINS["regex.replace"]

    def counting(args: list[Any]) -> Any:
        calls.append(list(args))
        return original(args)

    monkeypatch.setattr(
        wasm_evaluator, "HOST_BUILTINS", {**HOST_BUILTINS, "regex.replace": counting}
    )
    root = tmp_path / "p"
    root.mkdir()
    (root / "policy.rego").write_text(MEMO_POLICY)
    engine = EmbeddedPolicy(root, max_instances=1)
    for document, last in (
        ({"s": "aa", "t": "ab", "n": 1}, "undefined for a number"),
        ({"s": "aa", "t": "ab", "n": "1"}, "x"),  # "1" is not 1: answered anew
    ):
        calls.clear()
        assert engine.decide(document).reasons == ("bb", "bb", "bb", last)
        assert sorted(map(repr, calls)).count(repr(["aa", "a", "b"])) == 1
        assert len(calls) <= 4  # aa once, ab once, n at most twice (OPA may ask twice)
    calls.clear()
    engine.decide({"s": "aa", "t": "ab", "n": 1})
    assert ["aa", "a", "b"] in calls  # the next evaluation asks again


# -- failing closed, freeing instances -----------------------------------------------------

BIG_POLICY = """package agent.authz

decision := {"allow": true, "reasons": [regex.replace(input.s, "a", input.t)]}
"""


def test_a_guest_call_that_traps_inside_a_builtin_fails_closed(tmp_path: Path) -> None:
    """The result does not fit the memory cap: the guest's opa_malloc aborts inside the
    builtin, and the decision is an engine error, not an undefined builtin."""
    root = tmp_path / "p"
    root.mkdir()
    (root / "policy.rego").write_text(BIG_POLICY)
    engine = EmbeddedPolicy(root, memory_limit=16 << 20, max_instances=1, timeout=30)
    assert engine.decide({"s": "xa", "t": "b"}).reasons == ("xb",)
    decision = engine.decide({"s": "a" * 4000, "t": "b" * 8000})  # a 32 MB result
    assert (decision.allow, decision.error) == (False, ErrorType.ENGINE)
    assert engine.decide({"s": "xa", "t": "c"}).reasons == ("xc",)  # a fresh instance


def test_a_dropped_instance_is_freed() -> None:
    module = WasmModule(shipped_wasm())
    instance = module.instance(b"{}", memory_limit=None, host_builtins=HOST_BUILTINS)
    alive, store = weakref.ref(instance), weakref.ref(instance.store)
    del instance
    gc.collect()
    assert alive() is None and store() is None
