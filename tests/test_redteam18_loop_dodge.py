"""Red team 18: a model repeating the very same denied call is never stopped.

README ("Denial loops"): "When the model proposes a call (same tool, same arguments) that was
already denied in the conversation, the denial says so, more firmly each time; at
``max_repeated_denials`` (3 by default) the guard ends the run".

``planning.plan_turn`` counts earlier denials by the key of the call *as decided* (its
arguments after the tool's schema) but reads the history with the arguments *as the model sent
them*. A call whose arguments the schema changes (an amount quoted as text, ``"5000"``, that the
tool reads as ``5000``) never matches its own earlier denials: the model sends the identical
call turn after turn, every denial reads as the first, and the run never stops.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from mediation_kit import POLICY, Ledger, Script, agent_graph, node_graph

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine
from langchain_opa_guard.testing import tool_call

TURNS = 8


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


def stubborn(args: dict[str, Any]) -> Script:
    return Script(
        [AIMessage("", tool_calls=[tool_call("pay", dict(args), f"p{i}")]) for i in range(TURNS)]
    )


def run(kind: str, engine: PolicyEngine, args: dict[str, Any]) -> tuple[list[Any], Ledger]:
    ledger = Ledger()
    maker = node_graph if kind == "node" else agent_graph
    graph = maker(engine, stubborn(args), ledger)
    result = graph.invoke({"messages": [("user", "pay it")]}, {"recursion_limit": 80})
    return result["messages"], ledger


def model_turns(messages: list[Any]) -> int:
    return sum(1 for m in messages if isinstance(m, AIMessage) and m.tool_calls)


def denials(messages: list[Any]) -> list[str]:
    return [str(m.content) for m in messages if isinstance(m, ToolMessage)]


def test_control_the_same_denied_number_is_stopped_at_three(engine: PolicyEngine) -> None:
    messages, ledger = run("node", engine, {"amount": 5000})
    assert ledger.runs == []
    assert model_turns(messages) == 3


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_control_a_repeated_denial_says_so(engine: PolicyEngine, kind: str) -> None:
    # The middleware takes no max_repeated_denials, but its denials count the repeats too.
    messages, _ = run(kind, engine, {"amount": 5000})
    assert "denied 2 times" in denials(messages)[1]


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_a_repeated_quoted_number_denial_says_so(engine: PolicyEngine, kind: str) -> None:
    messages, ledger = run(kind, engine, {"amount": "5000"})
    assert ledger.runs == []
    assert "denied 2 times" in denials(messages)[1], (
        "the identical call pay(amount='5000') was denied again and the denial reads as the "
        f"first: {denials(messages)[1]!r}"
    )


def test_the_same_denied_quoted_number_is_stopped_at_three(engine: PolicyEngine) -> None:
    messages, ledger = run("node", engine, {"amount": "5000"})
    assert ledger.runs == []  # denied every time: the policy decides on 5000
    denials = [m.content for m in messages if isinstance(m, ToolMessage)]
    assert model_turns(messages) == 3, (
        f"the model sent pay(amount='5000') {model_turns(messages)} times and was never "
        "stopped: each denial counted as the first (history holds '5000', the key is 5000); "
        f"last denial: {denials[-1]!r}"
    )
