"""Red team: the ToolCallGuard interceptor and duplicated call ids after a checkpoint."""

from __future__ import annotations

import warnings

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode
from mediation_kit import POLICY, USER, Ledger, Script, answers_per_turn, mediation_tools

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine, ToolCallGuard
from langchain_opa_guard.testing import ScriptedChatModel, tool_call


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
    from langgraph.prebuilt import create_react_agent

    ledger = Ledger()
    tools = mediation_tools(ledger)
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    script = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("read", {"item": "a"}, "dup"),
                    tool_call("read", {"item": "b"}, "dup"),
                ],
            ),
            "ok",
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = create_react_agent(
            ScriptedChatModel(script=[script.reply] * 4),
            node,
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
