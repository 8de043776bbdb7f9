"""Red team: the ToolCallGuard interceptor and duplicated call ids after a checkpoint."""

from __future__ import annotations

import pytest
from conftest import TEST_POLICIES
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import (
    POLICY,
    USER,
    Ledger,
    answers_per_turn,
    interceptor_react_agent,
)

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine
from langchain_opa_guard.testing import tool_call


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


@pytest.mark.parametrize("pause", [False, True], ids=["in memory", "interrupt_before tools"])
def test_a_duplicated_id_is_answered_once_by_the_interceptor(
    engine: PolicyEngine, pause: bool
) -> None:
    """README: "an id used twice in the turn ... one answer per id". LangGraph's prebuilt
    ReAct agent sends each call to the ToolNode on its own (Send); after a checkpoint round
    trip (interrupt_before=["tools"]) the interceptor can no longer tell which of the two
    calls is "the first" (it compares dict identity) and answers both."""
    ledger = Ledger()
    graph = interceptor_react_agent(
        engine,
        ledger,
        [tool_call("read", {"item": "a"}, "dup"), tool_call("read", {"item": "b"}, "dup")],
        checkpointer=InMemorySaver(),
        interrupt_before=["tools"] if pause else None,
    )
    config = {"configurable": {"thread_id": f"dup-{pause}"}}
    result = graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    if pause:
        result = graph.invoke(None, config, context={"user": USER})
    assert ledger.runs == []
    assert answers_per_turn(result["messages"]) == [{"dup": 1}], answers_per_turn(
        result["messages"]
    )
