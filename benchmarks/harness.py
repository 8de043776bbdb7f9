"""Pieces shared by benchmarks 1 and 3-6: the admin's scripted turn, the unguarded twin of
the demo agent, policy inputs shaped like the guard's, and tables that carry notes.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from common import Table
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from langchain_opa_guard.contract import call_document, policy_input, where_document
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

ADMIN = {"id": "user-123", "role": "admin"}
READ_ARGS = {"customer_id": "CUST-001", "fields": {"name": True}}
TOOLKIT = {"toolkit": "CustomerDBTool"}
INPUTS = {"messages": [("user", "Get CUST-001's name")]}


class NotedTable(Table):
    """A :class:`common.Table` with notes (method, goals) printed and rendered under it."""

    def __init__(self, title: str, columns: Sequence[str]) -> None:
        super().__init__(title, columns)
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def markdown(self) -> str:
        text = super().markdown()
        if self.notes:
            text += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        return text


def admin_turn(n: int) -> list[Any]:
    """``n`` parallel reads of CUST-001's name, each allowed for the admin."""
    return [tool_call("get_customer_details", dict(READ_ARGS), f"call-{i}") for i in range(n)]


def admin_model(n: int) -> ScriptedChatModel:
    """A model that proposes ``n`` parallel allowed calls, then answers ``done``."""
    return ScriptedChatModel(script=[AIMessage("", tool_calls=admin_turn(n)), "done"])


def unguarded_agent(
    model: Any, tools: Sequence[BaseTool], *, noop_node: bool = False, checkpointer: Any = None
) -> Any:
    """The demo's ``build_agent`` without the guard: ``agent -> tools -> agent``.

    The agent node is built exactly as in ``build_agent`` (same RunnableLambda, sync and
    async twins), so the only difference between the two graphs is the guard node.
    ``noop_node=True`` puts a node that does nothing where the guard would be
    (``agent -> noop -> tools``): the cost of one more graph step, the floor of any guard.
    """
    bound = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, afunc=aagent, name="agent"))
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    if noop_node:
        builder.add_node("noop", RunnableLambda(_noop, afunc=_anoop, name="noop"))
        builder.add_conditional_edges("agent", tools_condition, {"tools": "noop", END: END})
        builder.add_edge("noop", "tools")
    else:
        builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


def task_per_call_agent(model: Any, tools: Sequence[BaseTool], *, checkpointer: Any = None) -> Any:
    """The unguarded graph in the shape the guard gives the tools step: each tool call of a
    turn a task of its own (a ``Send`` per call, as LangChain's ``create_agent`` does), so
    a retried or interrupted task never runs its neighbours again.

    ``agent -> [Send(tools, call) ...] -> agent``; the same agent node and tools as
    :func:`unguarded_agent`. The difference to it is what one task per call costs in
    LangGraph before any guard does anything.
    """
    from langgraph.types import Send

    bound = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    def route(state: MessagesState) -> Any:
        last = state["messages"][-1]
        if not getattr(last, "tool_calls", None):
            return END
        return [
            Send("tools", {"__type": "tool_call_with_context", "tool_call": call, "state": state})
            for call in last.tool_calls
        ]

    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, afunc=aagent, name="agent"))
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


def _noop(state: MessagesState) -> dict[str, Any]:
    return {}


async def _anoop(state: MessagesState) -> dict[str, Any]:
    return {}


def check_answered(result: dict[str, Any], n: int) -> None:
    """The run went agent -> tools -> agent with ``n`` successful tool results."""
    messages = result["messages"]
    results = [m for m in messages if getattr(m, "type", "") == "tool"]
    if messages[-1].content != "done" or len(results) != n:
        raise RuntimeError(f"unexpected run: {[m.type for m in messages]}")
    if any(m.status != "success" for m in results):
        raise RuntimeError(f"a call was not allowed: {[m.content for m in results]}")


def turn_documents(n: int) -> list[dict[str, Any]]:
    """The ``n`` input documents the guard builds for an admin turn of ``n`` reads.

    Built with the guard's own contract functions; the config is what LangGraph hands the
    guard node at step 2 of a threaded run.
    """
    calls = admin_turn(n)
    docs = [call_document(c, TOOLKIT) for c in calls]
    config = {
        "metadata": {"langgraph_node": "guard", "langgraph_step": 2, "checkpoint_ns": "guard:x"},
        "configurable": {"thread_id": "bench-thread"},
    }
    where = where_document(config, {"user": ADMIN}, agent="agent", tools="tools")
    user: dict[str, Any] = dict(ADMIN)
    history: list[dict[str, Any]] = []
    # As the guard builds them: the documents of a turn share everything but ``tool``.
    return [policy_input(doc, user, where, docs, history) for doc in docs]


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm``."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x"


def timed_rounds(
    sides: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    setup: dict[str, Callable[[], Any]] | None = None,
    teardown: dict[str, Callable[[], Any]] | None = None,
    warmup: int = 1,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each side, one sample per round, sides alternating each round.

    Each side's function does a whole block and returns how many operations it did;
    ``setup``/``teardown`` run around a side's block, outside the timed part (for
    instrumentors that patch globally). ``cpu``, when given, receives this process's CPU
    seconds (all threads) per operation, sampled alongside.
    """
    setup = setup or {}
    teardown = teardown or {}
    names = list(sides)
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was = gc.isenabled()
    try:
        for r in range(warmup + rounds):
            order = names if r % 2 == 0 else list(reversed(names))
            for name in order:
                if name in setup:
                    setup[name]()
                gc.collect()
                gc.disable()
                try:
                    cpu_start = time.process_time()
                    start = time.perf_counter()
                    count = sides[name]()
                    elapsed = time.perf_counter() - start
                    cpu_used = time.process_time() - cpu_start
                finally:
                    if gc_was:
                        gc.enable()
                    if name in teardown:
                        teardown[name]()
                if r >= warmup:
                    samples[name].append(elapsed / count)
                    if cpu is not None:
                        cpu.setdefault(name, []).append(cpu_used / count)
    finally:
        if gc_was:
            gc.enable()
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (for example OPA), from ``/proc``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DroppingExporter:
    """A span exporter that counts spans and drops them (no export cost is measured)."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def batch_provider() -> tuple[Any, DroppingExporter]:
    """A local SDK TracerProvider with a BatchSpanProcessor to a :class:`DroppingExporter`."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = DroppingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]
    return provider, exporter
