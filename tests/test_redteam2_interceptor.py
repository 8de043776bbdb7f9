"""Red team 2: the ToolCallGuard interceptor's one-answer-per-duplicated-id claim is never
released, so a ToolNode task that LangGraph runs again leaves the id with no answer."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import RetryPolicy
from mediation_kit import POLICY, USER

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine, ToolCallGuard
from langchain_opa_guard.testing import tool_call


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


@pytest.mark.parametrize("flaky", [False, True], ids=["control", "retried task"])
def test_a_duplicated_id_keeps_its_answer_when_the_tools_task_is_retried(
    engine: PolicyEngine, flaky: bool
) -> None:
    """The README's interceptor wiring: ToolNode(tools, wrap_tool_call=guard...) in a graph
    of one's own, with a RetryPolicy on the tools node (the README names retries). The
    model's turn uses one id twice (denied, one answer) and reads another item; that read
    hits a transient ConnectionError, so LangGraph runs the whole ToolNode task again.
    On the retry the duplicated id's claim is still held: both calls under it return an
    empty Command, and the id ends with no answer at all (a history OpenAI-style APIs reject)."""
    failures = [ConnectionError("backend hiccup")] if flaky else []

    def read(item: str) -> str:
        """Read an item."""
        if item == "c" and failures:
            raise failures.pop()
        return f"read {item}"

    tools = [StructuredTool.from_function(read)]
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    turns = iter(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("read", {"item": "a"}, "dup"),
                    tool_call("read", {"item": "b"}, "dup"),
                    tool_call("read", {"item": "c"}, "r1"),
                ],
            )
        ]
    )
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda s: {"messages": [next(turns, AIMessage("done"))]})
    builder.add_node("tools", node, retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.01))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile(checkpointer=InMemorySaver())
    result: dict[str, Any] = graph.invoke(
        {"messages": [("user", "go")]},
        {"configurable": {"thread_id": f"dup-retry-{flaky}"}},
        context={"user": USER},
    )
    answered = [m.tool_call_id for m in result["messages"] if isinstance(m, ToolMessage)]
    assert sorted(answered) == ["dup", "r1"], f"answers by id: {answered}"
