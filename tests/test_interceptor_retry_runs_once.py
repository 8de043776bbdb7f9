"""The ``ToolNode`` interceptor under a ``RetryPolicy``: a retried tools task runs again only
the calls whose tool raised.

A ``ToolNode`` runs all the calls of a turn in one task, so a retry (a sibling's tool raised,
or the node's ``timeout=`` expired) runs the whole turn again. The interceptor decides each
call again in the retry, and a call that an earlier attempt ran, still runs, or abandoned is
answered (with its kept result where it finished) instead of running a second time.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import InjectedToolCallId, StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import RetryPolicy
from mediation_kit import POLICY, USER, Ledger, Script, assert_one_answer_per_id
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy, ToolCallGuard
from langchain_opa_guard.testing import tool_call

TEST_POLICIES = ROOT / "tests" / "policies"
RETRY = RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=False)


class Tools:
    """``pay`` (slow on its first run of ``slow_id``) and ``read`` (raises on its first run
    when ``flaky``), recording what really ran."""

    def __init__(self, *, slow_id: str | None = None, flaky: bool = False) -> None:
        self.ledger = Ledger()
        self.finished = threading.Event()
        self.slow_id, self.flaky = slow_id, flaky
        self._lock = threading.Lock()
        self._slow_runs = 0
        self._reads = 0

    def tools(self) -> list[StructuredTool]:
        def pay(amount: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
            """Pay an amount."""
            with self._lock:
                first = tool_call_id == self.slow_id and self._slow_runs == 0
                if tool_call_id == self.slow_id:
                    self._slow_runs += 1
            if first:
                time.sleep(0.6)
            out = self.ledger.record("pay", tool_call_id, {"amount": amount})
            if tool_call_id == self.slow_id:
                self.finished.set()
            return out

        def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
            """Read an item."""
            with self._lock:
                self._reads += 1
                fail = self.flaky and self._reads == 1
            if fail:
                raise ConnectionError("flaky backend")  # the default RetryPolicy retries it
            return self.ledger.record("read", tool_call_id, {"item": item})

        return [StructuredTool.from_function(pay), StructuredTool.from_function(read)]


def graph_of(tools: Tools, calls: list[Any], **node_options: Any) -> Any:
    listed = tools.tools()
    guard = ToolCallGuard(EmbeddedPolicy(TEST_POLICIES, policy=POLICY), registry=listed)
    script = Script([AIMessage("", tool_calls=calls, id="ai-1"), "done"])
    builder = StateGraph(MessagesState)
    builder.add_node(
        "agent",
        RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}, name="agent"),
    )
    builder.add_node(
        "tools",
        ToolNode(
            listed, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
        ),
        retry_policy=RETRY,
        **node_options,
    )
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile()


def answers(result: dict[str, Any]) -> dict[str, ToolMessage]:
    assert_one_answer_per_id(result["messages"])
    return {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_sibling_that_raised_is_retried_and_the_payment_is_not(mode: str) -> None:
    tools = Tools(slow_id="p1", flaky=True)
    graph = graph_of(
        tools, [tool_call("pay", {"amount": 500}, "p1"), tool_call("read", {"item": "x"}, "r1")]
    )
    inputs = {"messages": [("user", "go")]}
    if mode == "sync":
        result = graph.invoke(inputs, context={"user": USER})
    else:

        async def scenario() -> dict[str, Any]:
            out = await graph.ainvoke(inputs, context={"user": USER})
            await asyncio.to_thread(tools.finished.wait, 5)  # the first run may still go on
            await asyncio.sleep(0.05)
            return out

        result = asyncio.run(scenario())
    assert tools.finished.wait(5)
    paid = [run for run in tools.ledger.runs if run[0] == "pay"]
    assert len(paid) == 1, tools.ledger.runs
    assert [run[1] for run in tools.ledger.runs if run[0] == "read"] == ["r1"]
    got = answers(result)
    assert got["r1"].status == "success"
    assert got["p1"].tool_call_id == "p1"


@pytest.mark.skipif(
    "timeout" not in inspect.signature(StateGraph.add_node).parameters,
    reason="this LangGraph has no node timeout",
)
def test_a_call_that_finished_before_the_timeout_keeps_its_result_on_retry() -> None:
    tools = Tools(slow_id="p1")
    graph = graph_of(
        tools,
        [tool_call("pay", {"amount": 100}, "p0"), tool_call("pay", {"amount": 500}, "p1")],
        timeout=0.2,
    )

    async def scenario() -> dict[str, Any]:
        out = await graph.ainvoke({"messages": [("user", "pay")]}, context={"user": USER})
        await asyncio.to_thread(tools.finished.wait, 5)
        await asyncio.sleep(0.05)
        return out

    result = asyncio.run(scenario())
    assert sorted(run[1] for run in tools.ledger.runs) == ["p0", "p1"], tools.ledger.runs
    got = answers(result)
    assert got["p0"].status == "success" and "pay ran" in str(got["p0"].content)
    assert got["p1"].status == "error" and "was cancelled" in str(got["p1"].content)
