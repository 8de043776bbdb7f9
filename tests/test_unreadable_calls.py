"""Calls whose arguments did not parse (``invalid_tool_calls``) get their one answer.

A model's call whose argument text is not JSON (a streamed call cut short by ``max_tokens``,
a doubled comma) lands in the message's ``invalid_tool_calls`` with its id. Nothing runs it,
but OpenAI-style APIs reject a history with a call id left unanswered, so the guard denies
each such call before the policy is asked (``invalid_call``) and answers it under its id, in
every wiring that decides the turn (the red team's case is
``test_redteam32_invalid_call_unanswered.py``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.messages.tool import invalid_tool_call
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import POLICY, USER, Ledger, Script, agent_graph, node_graph
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.guards.planning import UNREADABLE, unreadable_calls
from langchain_opa_guard.testing import tool_call

TEST_POLICIES = ROOT / "tests" / "policies"


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


def broken(call_id: str | None, name: str | None = "pay") -> Any:
    return invalid_tool_call(name=name, args='{"amount": 5000,,}', id=call_id, error=None)


def answers_to(messages: list[Any], turn_id: str) -> Counter[str]:
    turn = next(m for m in messages if isinstance(m, AIMessage) and m.id == turn_id)
    later = messages[messages.index(turn) + 1 :]
    return Counter(m.tool_call_id for m in later if isinstance(m, ToolMessage))


def test_unreadable_calls_are_the_invalid_ones_with_an_id() -> None:
    message = AIMessage(
        "",
        tool_calls=[tool_call("read", {"item": "x"}, "ok")],
        invalid_tool_calls=[broken("c1"), broken(None), broken("c2", name=None)],
    )
    calls = unreadable_calls(message)
    assert [(c["id"], c["name"], c["args"]) for c in calls] == [
        ("c1", "pay", {}),
        ("c2", "", {}),
    ]


def test_a_turn_of_only_unreadable_calls_is_answered_by_the_guard_edge(
    engine: EmbeddedPolicy,
) -> None:
    """``tools_condition`` ends such a turn (it has no ``tool_calls``); the guard's edge
    sends it to the guard node, which answers it, and the model plans again."""
    ledger = Ledger()
    turn = AIMessage("", id="m-1", invalid_tool_calls=[broken("c-bad")])
    graph = node_graph(engine, Script([turn, "done"]), ledger, wiring="edge")
    out = graph.invoke({"messages": [("user", "pay")]}, context={"user": USER})
    assert ledger.runs == []
    assert answers_to(out["messages"], "m-1") == Counter({"c-bad": 1})
    answer = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert answer.status == "error"
    assert UNREADABLE in str(answer.content)
    assert "5000" not in str(answer.content)  # the model's text is not echoed
    assert out["messages"][-1].content == "done"  # the model was asked again


@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_an_unreadable_call_under_the_id_of_a_readable_one_runs_nothing(
    engine: EmbeddedPolicy, wiring: str
) -> None:
    """One id for a call that parsed and one that did not: which one would its answer
    be for? Neither runs; the id gets one answer."""
    ledger = Ledger()
    turn = AIMessage(
        "",
        id="m-1",
        tool_calls=[tool_call("pay", {"amount": 5}, "c1"), tool_call("read", {"item": "x"}, "r1")],
        invalid_tool_calls=[broken("c1")],
    )
    graph = node_graph(
        engine, Script([turn, "done"]), ledger, wiring=wiring, checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": f"same-id-{wiring}"}}
    out = graph.invoke({"messages": [("user", "pay")]}, config, context={"user": USER})
    assert ledger.runs == [("read", "r1", {"item": "x"})]
    assert answers_to(out["messages"], "m-1") == Counter({"c1": 1, "r1": 1})


def test_the_middleware_answers_an_unreadable_call_in_the_state(engine: EmbeddedPolicy) -> None:
    """The guard answers it with the turn's other answers; ``create_agent`` of LangChain
    1.5 answers such a call itself when the model is next called (older versions never do),
    and then finds it answered: one answer, whatever LangChain version runs."""
    ledger = Ledger()
    turn = AIMessage(
        "",
        id="m-1",
        tool_calls=[tool_call("read", {"item": "x"}, "r1")],
        invalid_tool_calls=[broken("c-bad")],
    )
    graph = agent_graph(engine, Script([turn, "done"]), ledger)
    out = graph.invoke({"messages": [("user", "read")]}, context={"user": USER})
    assert ledger.runs == [("read", "r1", {"item": "x"})]
    assert answers_to(out["messages"], "m-1") == Counter({"r1": 1, "c-bad": 1})
