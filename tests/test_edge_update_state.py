"""The guard as the agent's edge when the caller edits the state as the agent.

``graph.update_state(config, values, as_node="agent")`` asks the agent's edges where the
edited state goes, outside any run: there is no runtime, so no user to decide for. The edge
then sends the turn to the guard node, which decides it when the run resumes (with the
run's context), as in the node wiring; the grant made for the turn before the edit grants
nothing for the edited calls.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import POLICY, USER, Ledger, Script, node_graph
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def paused_before_tools(engine: EmbeddedPolicy, ledger: Ledger) -> tuple[Any, dict[str, Any]]:
    """An edge-wired graph paused before its tools with ``pay 10`` allowed."""
    turn = AIMessage("", tool_calls=[tool_call("pay", {"amount": 10}, "c1")], id="m1")
    graph = node_graph(
        engine,
        Script([turn, "done"]),
        ledger,
        checkpointer=InMemorySaver(),
        interrupt_before=["tools"],
        wiring="edge",
    )
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    graph.invoke({"messages": [("user", "pay")]}, config, context={"user": USER})
    assert graph.get_state(config).next == ("tools",)
    return graph, config


def answers(messages: list[Any]) -> Counter[str]:
    return Counter(m.tool_call_id for m in messages if isinstance(m, ToolMessage))


@pytest.mark.parametrize(("amount", "runs"), [(5000, False), (20, True)])
def test_a_call_edited_as_the_agent_is_decided_again_on_resume(
    engine: EmbeddedPolicy, amount: int, runs: bool
) -> None:
    ledger = Ledger()
    graph, config = paused_before_tools(engine, ledger)
    edited = AIMessage("", tool_calls=[tool_call("pay", {"amount": amount}, "c1")], id="m1")
    graph.update_state(config, {"messages": [edited]}, as_node="agent")
    assert graph.get_state(config).next == ("guard",)
    out = graph.invoke(None, config, context={"user": USER})
    if runs:  # allowed: the guard hands it to the tools, before which the graph pauses
        assert ledger.runs == []
        assert graph.get_state(config).next == ("tools",)
        out = graph.invoke(None, config, context={"user": USER})
    # The policy allows pay <= 1000: the edit is decided, never run on the old grant.
    assert ledger.runs == ([("pay", "c1", {"amount": amount})] if runs else [])
    assert answers(out["messages"]) == Counter({"c1": 1})
    if not runs:
        answer = next(m for m in out["messages"] if isinstance(m, ToolMessage))
        assert answer.status == "error"


def test_a_final_answer_written_as_the_agent_runs_nothing(engine: EmbeddedPolicy) -> None:
    ledger = Ledger()
    graph, config = paused_before_tools(engine, ledger)
    graph.update_state(config, {"messages": [AIMessage("no payment", id="m1")]}, as_node="agent")
    out = graph.invoke(None, config, context={"user": USER})
    assert ledger.runs == []
    assert answers(out["messages"]) == Counter()
    assert out["messages"][-1].content == "no payment"
