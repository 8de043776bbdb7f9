"""``OPAGuardMiddleware`` ends a run whose model keeps proposing a denied call, as
``PolicyGuardNode`` does: at ``max_repeated_denials`` (3 by default) the turn's calls are
answered, none runs, and the agent jumps to its end with a message that says why."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from mediation_kit import POLICY, Ledger, Script, mediation_tools
from opa_process import ROOT
from test_guard_node import assert_every_call_answered_once

from langchain_opa_guard import EmbeddedPolicy, OPAGuardMiddleware, PolicyEngine
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

TURNS = 8


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def stubborn(extra: list[dict[str, Any]] | None = None) -> Script:
    """A model that sends the same denied payment every turn (with ``extra`` calls)."""
    return Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("pay", {"amount": 5000}, f"p{i}"),
                    *(tool_call(c["name"], c["args"], f"{c['name']}{i}") for c in extra or []),
                ],
            )
            for i in range(TURNS)
        ]
    )


def run(
    engine: PolicyEngine, script: Script, *, side: str = "sync", **options: Any
) -> tuple[list[Any], Ledger]:
    ledger = Ledger()
    tools = mediation_tools(ledger)
    agent = create_agent(
        ScriptedChatModel(script=[script.reply] * 32),
        tools,
        middleware=[OPAGuardMiddleware(engine, registry=tools, **options)],
    )
    state = {"messages": [("user", "pay it")]}
    config: Any = {"recursion_limit": 80}
    if side == "async":
        result = asyncio.run(agent.ainvoke(state, config))
    else:
        result = agent.invoke(state, config)
    return result["messages"], ledger


def model_turns(messages: list[Any]) -> int:
    return sum(1 for m in messages if isinstance(m, AIMessage) and m.tool_calls)


@pytest.mark.parametrize("side", ["sync", "async"])
def test_the_run_ends_at_the_third_identical_denial(engine: PolicyEngine, side: str) -> None:
    messages, ledger = run(engine, stubborn(), side=side)
    assert ledger.runs == []
    assert model_turns(messages) == 3
    denials = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
    assert "denied 3 times" in denials[-1]
    assert isinstance(messages[-1], AIMessage) and "I stopped here" in str(messages[-1].content)
    assert_every_call_answered_once(messages)


def test_an_allowed_call_of_the_last_turn_does_not_run(engine: PolicyEngine) -> None:
    # Each turn also reads an item (allowed): it runs in the first two turns only.
    messages, ledger = run(engine, stubborn([{"name": "read", "args": {"item": "x"}}]))
    assert ledger.names() == ["read", "read"]
    assert model_turns(messages) == 3
    last = [m for m in messages if isinstance(m, ToolMessage) and m.tool_call_id == "read2"]
    assert len(last) == 1 and "did not run" in str(last[0].content)
    assert_every_call_answered_once(messages)


def test_a_call_waiting_for_approval_in_the_last_turn_asks_nobody(engine: PolicyEngine) -> None:
    # No checkpointer: an interrupt would fail the run. The stop answers the call unrun.
    extra = [{"name": "send", "args": {"to": "a@ask.test", "body": "b"}}]
    messages, ledger = run(engine, stubborn(extra), approvals="deny")
    assert ledger.runs == [] and model_turns(messages) == 3
    assert "I stopped here" in str(messages[-1].content)


def test_the_limit_is_configurable_and_can_be_turned_off(engine: PolicyEngine) -> None:
    messages, _ = run(engine, stubborn(), max_repeated_denials=5)
    assert model_turns(messages) == 5
    messages, ledger = run(engine, stubborn(), max_repeated_denials=None)
    assert model_turns(messages) == TURNS and ledger.runs == []
    assert "I stopped here" not in str(messages[-1].content)
    with pytest.raises(ValueError, match="max_repeated_denials"):
        OPAGuardMiddleware(engine, max_repeated_denials=0)
