"""Red team 51: what was tried against f205510 and held (these pass).

* ``_hidden_keys``: a tool freed and another allocated at its id gets its own filter's
  answer (the weak reference), a schema replaced is read again;
* the grant's digest (``known``): arguments changed in place after the grant check, at the
  top level or deep inside, are stopped where the tool starts;
* ``_exactly_plain`` written with loops decides as the generator form did (subclasses,
  tuples, floats, bools, the depth limit), and values it sends down the slow path still get
  digests of their own (bool vs int, float vs int, str subclass vs str).
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from langchain_core.tools import StructuredTool
from test_tool_start_check import Plain, WithInjected

from langchain_opa_guard import fast_json
from langchain_opa_guard.fast_json import _CANONICAL_DEPTH, _LEAVES, _exactly_plain
from langchain_opa_guard.guards.tool_start_check import (
    ToolStartCheck,
    UncheckedToolRun,
    checking,
    expected_digest,
)
from langchain_opa_guard.guards.tools_payload import call_digest
from langchain_opa_guard.plain_json import value_digest
from langchain_opa_guard.testing import tool_call


def _lookup(schema: type, ran: list[dict[str, Any]] | None = None) -> StructuredTool:
    def lookup(**kwargs: Any) -> str:
        """Look a key up."""
        if ran is not None:
            ran.append(dict(kwargs))
        return "x"

    return StructuredTool.from_function(lookup, name="lookup", args_schema=schema)


def test_a_tool_at_a_freed_tools_id_gets_its_own_answer() -> None:
    """A tool whose schema hides ``region`` is asked, then freed; tools with a schema that
    shows it are made until one lands at the freed id (CPython reuses it). Expected, and
    observed: each new tool's digest keeps ``region``."""
    args = {"key": "k", "region": "eu"}
    first = _lookup(WithInjected)
    assert expected_digest(first, "lookup", args) == call_digest("lookup", {"key": "k"})
    freed = id(first)
    del first
    gc.collect()
    for _ in range(64):
        other = _lookup(Plain)
        assert expected_digest(other, "lookup", args) == call_digest("lookup", args)
        if id(other) == freed:
            break
        del other


@pytest.mark.parametrize(
    ("args", "change"),
    [
        ({"key": "k", "region": "eu"}, lambda a: a.__setitem__("region", "us")),
        ({"key": "k", "region": "eu"}, lambda a: a.__setitem__("extra", "x")),
        (
            {"key": "k", "region": "eu", "more": {"deep": ["a"]}},
            lambda a: a["more"]["deep"].append("b"),
        ),
    ],
)
def test_arguments_changed_after_the_grant_check_do_not_run(
    args: dict[str, Any], change: Any
) -> None:
    """The grant's digest is taken of ``args``; then ``args`` is changed in place (a value,
    a key added, a value deep inside) before the check for its run is made with that digest
    as ``known``. Expected, and observed: the tool does not start."""
    ran: list[dict[str, Any]] = []
    tool = _lookup(Plain, ran) if "more" not in args else _lookup_any(ran)
    digest = call_digest("lookup", args)
    change(args)
    call = tool_call("lookup", args, "c1")
    check = ToolStartCheck(call, expected_digest(tool, "lookup", args, (args, digest)))
    with checking(check), pytest.raises(UncheckedToolRun):
        tool.invoke(call)
    assert ran == []


def _lookup_any(ran: list[dict[str, Any]]) -> StructuredTool:
    def lookup(key: str, region: str, more: dict[str, Any]) -> str:
        """Look a key up."""
        ran.append({"key": key, "region": region, "more": more})
        return "x"

    return StructuredTool.from_function(lookup, name="lookup")


def _generator_form(value: Any, depth: int) -> bool:
    kind = type(value)
    if kind is dict:
        return depth < _CANONICAL_DEPTH and all(
            type(k) is str and (type(v) in _LEAVES or _generator_form(v, depth + 1))
            for k, v in value.items()
        )
    if kind is list:
        return depth < _CANONICAL_DEPTH and all(
            type(v) in _LEAVES or _generator_form(v, depth + 1) for v in value
        )
    return kind in _LEAVES


class Text(str):
    pass


class Number(int):
    pass


class Table(dict):  # type: ignore[type-arg]
    pass


def _nested(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


VALUES = [
    {"a": 1},
    {"a": True},
    {"a": 1.0},
    {"a": (1, 2)},
    {"a": [1, [2, {"b": None}]]},
    {"a": Text("x")},
    {"a": Number(1)},
    {"a": Table(b=1)},
    {1: "a"},
    {"a": {"b": float("nan")}},
    [1, "x", None, False],
    [[], {}, [{}]],
    _nested(_CANONICAL_DEPTH - 1),
    _nested(_CANONICAL_DEPTH),
    _nested(_CANONICAL_DEPTH + 1),
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_exactly_plain_decides_as_before(value: Any) -> None:
    """The loop form of ``_exactly_plain`` against the generator form it replaced."""
    assert _exactly_plain(value, 0) is _generator_form(value, 0)
    assert (fast_json.canonical_dumps(value) is None) is not _generator_form(value, 0)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"a": True}, {"a": 1}),
        ({"a": 1.5}, {"a": 1}),
        ({"a": 1.0}, {"a": True}),
        ({"a": Text("1")}, {"a": 1}),
        ({"a": [True]}, {"a": [1]}),
        ({"a": {"b": False}}, {"a": {"b": 0}}),
    ],
)
def test_values_off_the_plain_path_keep_digests_of_their_own(one: Any, other: Any) -> None:
    """A value ``_exactly_plain`` sends down the slow path never shares a digest with a
    different plain one."""
    assert value_digest(["t", one]) != value_digest(["t", other])
