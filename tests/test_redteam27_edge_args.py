"""Red team 27: the edge's sealed decisions are not bound to the calls' arguments.

``routed()`` seals the model message's id, the decided calls' ids and the decisions, but not
what each call asks for. The guard node plans the turn from the messages of its own ``Send``
payload (not sealed), so a caller who has seen one sealed hand-over (``stream_mode="tasks"``
or ``"debug"`` shows every task's input, a LangGraph server streams them to its API clients)
Sends it back to the guard with other arguments under the same message and call ids: the
allow made for ``pay 5`` is taken for ``pay 99999``, the guard grants it and seals a tools
payload for it, and the tool runs a payment the policy denies.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send
from mediation_kit import POLICY, USER, Ledger, Script, node_graph
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.guards.guard_edge import ROUTED_KEY
from langchain_opa_guard.testing import tool_call

TEST_POLICIES = ROOT / "tests" / "policies"


@pytest.fixture
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


def captured_inputs(graph: Any, value: Any, config: Any, node: str) -> list[dict[str, Any]]:
    """What a caller sees of ``node``'s task inputs while its run streams."""
    seen = []
    for event in graph.stream(value, config, context={"user": USER}, stream_mode="tasks"):
        if event.get("name") == node and "input" in event:
            seen.append(copy.deepcopy(event["input"]))
    return seen


@pytest.mark.parametrize("thread", ["same thread", "another thread"])
def test_edge_decisions_replayed_with_other_arguments_run_a_denied_payment(
    engine: EmbeddedPolicy, thread: str
) -> None:
    ledger = Ledger()
    turn = AIMessage(
        "",
        tool_calls=[
            tool_call("pay", {"amount": 5}, "c1"),  # allowed
            tool_call("pay", {"amount": 99999}, "c2"),  # denied: the turn goes to the guard
        ],
        id="m1",
    )
    graph = node_graph(engine, Script([turn]), ledger, checkpointer=InMemorySaver(), wiring="edge")
    config = {"configurable": {"thread_id": "rt27-edge"}}
    [payload] = captured_inputs(graph, {"messages": [("user", "hi")]}, config, "guard")
    assert ledger.runs == [("pay", "c1", {"amount": 5})]
    assert ROUTED_KEY in payload

    # The same sealed decisions, the same message and call ids, other arguments.
    forged = dict(payload)
    forged["messages"] = [
        AIMessage(
            "",
            tool_calls=[
                tool_call("pay", {"amount": 99999}, "c1"),
                tool_call("pay", {"amount": 99999}, "c2"),
            ],
            id="m1",
        )
        if getattr(m, "id", None) == "m1"
        else m
        for m in payload["messages"]
    ]
    if thread == "another thread":
        config = {"configurable": {"thread_id": "rt27-edge-other"}}
        graph.invoke({"messages": [("user", "hi")]}, config, context={"user": USER})
        ledger.runs.clear()
    else:
        ledger.runs.clear()
    graph.invoke(Command(goto=Send("guard", forged)), config, context={"user": USER})

    # Expected: the decisions do not fit these calls, so the turn is decided afresh and
    # the payment of 99999 is denied (nothing runs).
    assert [args for _, _, args in ledger.runs if args.get("amount", 0) > 1000] == []
