"""Red team 7: ``value_digest`` takes one of two texts, chosen by the value's Python form.

Plain JSON data is hashed as orjson writes it (``1e-7``); anything else as
``canonical_json`` writes it (``1e-07``). ``plain_dumps`` steps aside for a value holding a
``null`` that does not read back ``==`` the value, and a tuple never reads back ``==`` (it
reads back as a list). So ``{"span": (1, 2), "note": None, "ratio": 1e-7}`` and the same
value with a list have different digests, although ``canonical_json`` (and the policy)
takes them for one value. A checkpoint turns the tuple into a list: with
``interrupt_before=["tools"]`` an *allowed* call is refused on resume as "changed after the
policy allowed it" (fail closed, but a call the policy allowed does not run; before the
orjson path it ran).

And the other way: orjson writes an ``orjson.Fragment`` as its raw bytes, unchecked, so a
value holding one can be given the digest of any other value (``{"a": Fragment(b'1,"b":2')}``
has the digest of ``{"a": 1, "b": 2}``), where ``canonical_json`` wrote its ``str()``.
"""

from __future__ import annotations

import orjson
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import POLICY, USER, Ledger, Script, node_graph

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.plain_json import canonical_json, value_digest
from langchain_opa_guard.testing import tool_call

WITH_TUPLE = {"item": "a", "span": (1, 2), "note": None, "ratio": 1e-7}
WITH_LIST = {"item": "a", "span": [1, 2], "note": None, "ratio": 1e-7}


def test_values_canonical_json_takes_for_one_have_one_digest() -> None:
    assert canonical_json(WITH_TUPLE) == canonical_json(WITH_LIST)
    assert value_digest(WITH_TUPLE) == value_digest(WITH_LIST)


def test_an_allowed_call_runs_after_a_pause_before_the_tools_node() -> None:
    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    ledger = Ledger()
    message = AIMessage("", tool_calls=[tool_call("read", dict(WITH_TUPLE), "r1")])
    graph = node_graph(
        engine,
        Script([message, "done"]),
        ledger,
        checkpointer=InMemorySaver(),
        interrupt_before=["tools"],
    )
    config = {"configurable": {"thread_id": "rt7-tuple"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    result = graph.invoke(None, config, context={"user": USER})
    answer = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert answer.status == "success", answer.content
    assert ledger.runs == [("read", "r1", {"item": "a"})]


def test_a_fragment_does_not_take_another_values_digest() -> None:
    forged = {"a": orjson.Fragment(b'1,"b":2')}
    assert value_digest(forged) != value_digest({"a": 1, "b": 2})
    assert value_digest({"amount": orjson.Fragment(b"10")}) != value_digest({"amount": 10})
