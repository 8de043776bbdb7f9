"""Red team: GuardedToolNode runs a whole turn in one task; re-running that task runs the
turn's allowed calls again."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import Command, RetryPolicy, interrupt
from mediation_kit import POLICY, USER, Script

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyEngine, PolicyGuardNode
from langchain_opa_guard.testing import tool_call


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


def guarded(engine: PolicyEngine, tools: list[Any], script: Script, **tools_node: Any) -> Any:
    node = GuardedToolNode(tools)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}))
    builder.add_node("guard", PolicyGuardNode(engine, registry=node))
    builder.add_node("tools", node, **tools_node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


def send_and_read() -> Script:
    return Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("send", {"to": "bob@ok.test", "body": "x"}, "s1"),
                    tool_call("read", {"item": "a"}, "r1"),
                ],
            ),
            "ok",
        ]
    )


def test_a_retried_tools_node_does_not_send_twice(engine: PolicyEngine) -> None:
    """A RetryPolicy on the tools node (a flaky read raises ConnectionError once): the
    retry runs the whole turn again, and the send that already went out goes out again."""
    sent: list[str] = []
    attempts: list[int] = []

    def send(to: str, body: str) -> str:
        """Send a message."""
        sent.append(to)
        return "sent"

    def read(item: str) -> str:
        """Read an item."""
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("the backend hiccuped")
        return "data"

    tools = [StructuredTool.from_function(send), StructuredTool.from_function(read)]
    graph = guarded(engine, tools, send_and_read(), retry_policy=RetryPolicy(max_attempts=3))
    graph.invoke(
        {"messages": [("user", "go")]},
        {"configurable": {"thread_id": "retry"}},
        context={"user": USER},
    )
    assert sent == ["bob@ok.test"], f"sent {len(sent)} times"


def test_a_tool_that_asks_the_user_does_not_resend_its_neighbour(engine: PolicyEngine) -> None:
    """A tool that asks the user with interrupt() (LangGraph's documented pattern): on
    resume the tools task runs again from the start, and the send of the same turn with it."""
    sent: list[str] = []

    def send(to: str, body: str) -> str:
        """Send a message."""
        sent.append(to)
        return "sent"

    def read(item: str) -> str:
        """Read an item (asks the user which version)."""
        return f"{item} version {interrupt('which version?')}"

    tools = [StructuredTool.from_function(send), StructuredTool.from_function(read)]
    graph = guarded(engine, tools, send_and_read())
    config = {"configurable": {"thread_id": "ask"}}
    first = graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert first["__interrupt__"][0].value == "which version?"
    graph.invoke(Command(resume="v2"), config, context={"user": USER})
    assert sent == ["bob@ok.test"], f"sent {len(sent)} times"
