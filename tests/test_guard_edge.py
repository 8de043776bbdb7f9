"""The guard as the reasoning node's conditional edge (``PolicyGuardNode.edge``).

A turn whose calls are all allowed goes from the agent to the tools in the step that
proposed it; any other turn goes on to the guard node with the decisions made, so each call
is decided once. The complete-mediation suites built on ``mediation_kit.node_graph`` run with
this wiring too (``make test`` sets ``OPA_GUARD_TEST_WIRING=edge`` for a second pass); these
tests check what is particular to it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send
from mediation_kit import POLICY, USER, Ledger, Script, assert_one_answer_per_id, node_graph
from opa_process import ROOT

from langchain_opa_guard import DecisionLog, EmbeddedPolicy, GuardedToolNode, PolicyGuardNode
from langchain_opa_guard.guards.guard_edge import ROUTED_KEY
from langchain_opa_guard.testing import tool_call

TEST_POLICIES = ROOT / "tests" / "policies"


def engine(log: Path | None = None) -> EmbeddedPolicy:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


def steps(graph: Any, mode: str) -> list[str]:
    """The nodes that ran, in order."""
    inputs = {"messages": [("user", "go")]}
    if mode == "sync":
        chunks = list(graph.stream(inputs, stream_mode="updates", context={"user": USER}))
    else:

        async def collect() -> list[Any]:
            return [
                c
                async for c in graph.astream(inputs, stream_mode="updates", context={"user": USER})
            ]

        chunks = asyncio.run(collect())
    return [name for chunk in chunks for name in chunk]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_allowed_turn_goes_to_the_tools_without_the_guard_node(mode: str) -> None:
    ledger = Ledger()
    script = Script([AIMessage("", tool_calls=[tool_call("read", {"item": "a"}, "r1")]), "done"])
    graph = node_graph(engine(), script, ledger, wiring="edge")
    assert steps(graph, mode) == ["agent", "tools", "agent"]
    assert ledger.names() == ["read"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_turn_with_a_denial_is_decided_once_and_answered_by_the_guard_node(
    tmp_path: Path, mode: str
) -> None:
    ledger = Ledger()
    log = tmp_path / "decisions.jsonl"
    script = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("read", {"item": "a"}, "r1"),
                    tool_call("pay", {"amount": 5000}, "p1"),
                ],
            ),
            "done",
        ]
    )
    tools = GuardedToolNode(__import__("mediation_kit").mediation_tools(ledger))
    guard = PolicyGuardNode(engine(), registry=tools, decision_log=DecisionLog(log))
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda s: {"messages": [script.reply(s["messages"])]})
    builder.add_node("guard", guard)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    builder.add_edge("tools", "agent")
    graph = builder.compile()
    assert steps(graph, mode) == ["agent", "guard", "tools", "agent"]
    assert ledger.names() == ["read"]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    decided = sorted(r["input"]["tool"]["call_id"] for r in records)
    assert decided == ["p1", "r1"]  # each call decided once, by the edge
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": USER})
    denial = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "p1"
    )
    assert denial.status == "error" and "amount over 1000" in str(denial.content)
    assert_one_answer_per_id(result["messages"])


def test_decisions_carried_for_another_message_are_not_used() -> None:
    """The guard node uses carried decisions only for the turn they were made for."""
    ledger = Ledger()
    script = Script([AIMessage("", tool_calls=[tool_call("pay", {"amount": 5000}, "p1")], id="m1")])
    graph = node_graph(engine(), script, ledger, checkpointer=InMemorySaver(), wiring="edge")
    config = {"configurable": {"thread_id": "carried"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert ledger.runs == []
    allow = {
        "allow": True,
        "reasons": [],
        "decision_id": None,
        "codes": [],
        "require_approval": False,
        "error": None,
        "engine": "embedded",
        "policy": POLICY,
        "result": {"allow": True},
        "revision": None,
        "args": None,
        "shadowed": False,
    }
    state = graph.get_state(config).values
    forged = {
        **state,
        ROUTED_KEY: {"message_id": "another", "calls": ["p1"], "decisions": [allow]},
    }
    graph.invoke(Command(goto=Send("guard", forged)), config, context={"user": USER})
    assert ledger.runs == []
