"""Red team 29: a node ``timeout=`` on the tools node runs an allowed call twice in one process.

LangGraph 1.2 times a node out by cancelling its asyncio task. A sync tool that a
``ToolNode`` runs on the async path runs in a worker thread, which cancelling cannot stop:
the tool keeps running and finishes its side effect. The grant check's run-once claim
(``claims.arun_once``) is released on *any* ``BaseException``, so also on that
``CancelledError``, while the tool is still running. The retry (``retry_policy=``; the
default ``RetryPolicy`` retries ``NodeTimeoutError``) or a resume of the failed step then
claims the same call of the same decided turn again and runs it a second time: one allowed
payment, paid twice, in one process, and the first run never failed.

What should happen: a call whose run was abandoned (cancelled) while its tool may still be
running stays claimed; the retry or resume answers it (its run "was cancelled")
without running it again. (The same under the ``ToolNode`` interceptor:
``test_interceptor_retry_runs_once.py``.)
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
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import RetryPolicy
from mediation_kit import POLICY, USER, Ledger, Script
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode
from langchain_opa_guard.testing import tool_call

TEST_POLICIES = ROOT / "tests" / "policies"
PAY = tool_call("pay", {"amount": 500}, "p1")  # allowed once (the policy allows <= 1000)

# Node timeouts came with LangGraph 1.2; on older versions a run cancelled by its caller
# takes the same path (test_a_run_cancelled_while_a_tool_runs_does_not_run_it_again).
needs_node_timeout = pytest.mark.skipif(
    "timeout" not in inspect.signature(StateGraph.add_node).parameters,
    reason="this LangGraph has no node timeout",
)


def assert_answered_as_cancelled(messages: list[Any]) -> None:
    answers = [m for m in messages if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in answers] == ["p1"]
    assert answers[0].status == "error"
    assert "was cancelled" in str(answers[0].content)


class SlowOnce:
    """A sync payment tool that, under load, takes longer than the node's timeout the
    first time (it still completes: the payment goes through)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.started = 0
        self.finished = threading.Event()
        self._lock = threading.Lock()

    def tool(self) -> StructuredTool:
        def pay(amount: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
            """Pay an amount."""
            with self._lock:
                self.started += 1
                first = self.started == 1
            if first:
                time.sleep(0.6)  # slower than the node's timeout
            out = self.ledger.record("pay", tool_call_id, {"amount": amount})
            if first:
                self.finished.set()
            return out

        return StructuredTool.from_function(pay)


def graph_with_timed_tools(
    pay: Any,
    *,
    retry: bool,
    checkpointer: Any = None,
    wiring: str = "node",
    timeout: float | None = 0.2,
) -> Any:
    """agent -> guard -> tools with the payment tool ``pay`` (a ``SlowOnce`` or a tool),
    the tools node under ``timeout`` and, with ``retry``, a ``RetryPolicy``."""
    tools = GuardedToolNode([pay.tool() if isinstance(pay, SlowOnce) else pay])
    guard = PolicyGuardNode(EmbeddedPolicy(TEST_POLICIES, policy=POLICY), registry=tools)
    script = Script([AIMessage("", tool_calls=[PAY], id="ai-1"), "done"])
    builder = StateGraph(MessagesState)
    builder.add_node(
        "agent",
        RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}, name="agent"),
    )
    builder.add_node("guard", guard)
    retry_policy = RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=False)
    builder.add_node(
        "tools",
        tools,
        retry_policy=retry_policy if retry else None,
        **({"timeout": timeout} if timeout is not None else {}),
    )
    builder.add_edge(START, "agent")
    if wiring == "edge":
        builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    else:
        from langgraph.prebuilt import tools_condition

        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


@needs_node_timeout
@pytest.mark.parametrize(
    ("wiring", "then"), [("node", "retry"), ("edge", "retry"), ("node", "resume")]
)
def test_a_tools_node_timeout_then_retry_or_resume_does_not_run_the_call_again(
    wiring: str, then: str
) -> None:
    """The timeout abandons the running payment; the node's ``RetryPolicy`` retries the
    task, or (no retry) the operator resumes the failed run right away, while the tool
    still runs."""
    ledger = Ledger()
    slow = SlowOnce(ledger)
    resume = then == "resume"
    saver = InMemorySaver() if resume else None
    graph = graph_with_timed_tools(slow, retry=not resume, wiring=wiring, checkpointer=saver)
    config = {"configurable": {"thread_id": "timed-out"}}
    inputs = {"messages": [("user", "pay 500")]}

    async def scenario() -> dict[str, Any]:
        if resume:
            with pytest.raises(Exception, match=r"(?i)timed? ?out"):
                await graph.ainvoke(inputs, config, context={"user": USER})
            out = await graph.ainvoke(None, config, context={"user": USER})
        else:
            out = await graph.ainvoke(inputs, context={"user": USER})
        # Let the first (abandoned, still running) attempt finish its payment.
        await asyncio.to_thread(slow.finished.wait, 5)
        await asyncio.sleep(0.05)
        return out

    result = asyncio.run(scenario())
    paid = [run for run in ledger.runs if run[0] == "pay"]
    # Allowed once, decided once: it must not be paid twice.
    assert len(paid) == 1, paid
    assert_answered_as_cancelled(result["messages"])


@needs_node_timeout
def test_an_async_tool_cancelled_by_the_timeout_after_its_effect_is_not_run_again() -> None:
    """The same release for an async tool: the node's timeout cancels it after its side
    effect (the payment request went out; it was awaiting the receipt). The tool did not
    fail: the framework abandoned it. The retry claims the call again and pays again."""
    ledger = Ledger()
    attempts = {"n": 0}

    async def pay(amount: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Pay an amount."""
        attempts["n"] += 1
        ledger.record("pay", tool_call_id, {"amount": amount})  # the money moves
        if attempts["n"] == 1:
            await asyncio.sleep(0.6)  # the receipt is slow under load
        return "paid"

    graph = graph_with_timed_tools(StructuredTool.from_function(coroutine=pay), retry=True)
    result = asyncio.run(graph.ainvoke({"messages": [("user", "pay 500")]}, context={"user": USER}))
    assert [run[0] for run in ledger.runs] == ["pay"], ledger.runs
    assert_answered_as_cancelled(result["messages"])


@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_a_run_cancelled_while_a_tool_runs_does_not_run_it_again(wiring: str) -> None:
    """The caller cancels the run while the allowed payment runs (in a worker thread,
    which cancelling does not stop); resuming the thread answers the call, unrun."""
    ledger = Ledger()
    slow = SlowOnce(ledger)
    graph = graph_with_timed_tools(
        slow, retry=False, checkpointer=InMemorySaver(), wiring=wiring, timeout=None
    )
    config = {"configurable": {"thread_id": "cancelled-tool"}}

    async def scenario() -> dict[str, Any]:
        run = asyncio.create_task(
            graph.ainvoke({"messages": [("user", "pay 500")]}, config, context={"user": USER})
        )
        for _ in range(500):
            if slow.started:
                break
            await asyncio.sleep(0.01)
        assert slow.started == 1
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        out = await graph.ainvoke(None, config, context={"user": USER})
        await asyncio.to_thread(slow.finished.wait, 5)
        await asyncio.sleep(0.05)
        return out

    result = asyncio.run(scenario())
    assert [run[0] for run in ledger.runs] == ["pay"], ledger.runs
    assert_answered_as_cancelled(result["messages"])
