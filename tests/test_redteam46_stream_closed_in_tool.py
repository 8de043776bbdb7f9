"""Red team 46: a stream closed while a slow tool runs, and the thread resumed at once (pins;
all pass here).

The attack: turn ``a1`` holds ``read`` (``r1``, allowed; a tool that writes a "custom" stream
event when it starts, then works for 0.3 s) and ``pay`` of 5000 (``p1``, denied). The run is
streamed with ``stream_mode=["custom", "updates"]`` and the stream is closed at the tool's
"started" event, while the tool is in the middle of its work; the thread is at once continued
with ``invoke(None, config)`` (``ainvoke``), which may race the first run's tool, and then a new
message. Sync ``stream`` with a sync tool, ``astream`` with a sync tool (a worker thread) and
with an async tool. Guard node, guard edge, ``ToolNode`` interceptor, middleware.

Expected, and observed: ``r1`` starts once (never a second time beside or after the first);
the denied ``p1`` never runs; each call is answered once; an answer saying "read ran" comes
from a finished run. (A sync tool's thread that goes on after an async run was cancelled is
the README's known limit: "cancelling a task stops neither a sync tool's worker thread nor
what an async tool already did".)
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool
from langgraph.config import get_stream_writer
from mediation_kit import (
    USER,
    Ledger,
    Script,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    thread_config,
    turn,
    wired_graph,
)

from langchain_opa_guard import (
    EmbeddedPolicy,
)
from langchain_opa_guard.testing import tool_call

KINDS = ("node", "edge", "interceptor", "middleware")


def slow_read(ledger: Ledger, flavour: str) -> BaseTool:
    def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an item."""
        ledger.record("read-start", tool_call_id, {"item": item})
        get_stream_writer()({"started": tool_call_id})
        time.sleep(0.3)
        return ledger.record("read", tool_call_id, {"item": item})

    async def aread(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an item."""
        ledger.record("read-start", tool_call_id, {"item": item})
        get_stream_writer()({"started": tool_call_id})
        await asyncio.sleep(0.3)
        return ledger.record("read", tool_call_id, {"item": item})

    if flavour == "async":
        return StructuredTool.from_function(coroutine=aread, name="read", description="Read.")
    return StructuredTool.from_function(read)


def build(engine: EmbeddedPolicy, kind: str, ledger: Ledger, flavour: str) -> Any:
    a1 = turn(tool_call("read", {"item": "i"}, "r1"), tool_call("pay", {"amount": 5000}, "p1"))
    model = Script([a1, "ok", "ok", "ok"])
    tools = [slow_read(ledger, flavour), *(t for t in mediation_tools(ledger) if t.name != "read")]
    return wired_graph(engine, kind, tools, model, answer_open=True)


def is_started(event: Any) -> bool:
    return isinstance(event, tuple) and event[0] == "custom" and "started" in event[1]


def check(graph: Any, ledger: Ledger, config: Any, where: str) -> None:
    time.sleep(0.4)  # a tool thread left over from the closed stream has finished by now
    starts = [i for name, i, _ in ledger.runs if name == "read-start"]
    assert starts == ["r1"], (where, ledger.runs)
    assert all(name != "pay" for name, _, _ in ledger.runs), (where, ledger.runs)
    state = graph.get_state(config)
    assert not state.next, (where, state.next)
    msgs = state.values["messages"]
    at = next(i for i, m in enumerate(msgs) if isinstance(m, AIMessage) and m.tool_calls)
    answers = [m for m in msgs[at + 1 :] if isinstance(m, ToolMessage)]
    assert sorted(m.tool_call_id for m in answers) == ["p1", "r1"], (where, msgs)
    r1 = next(m for m in answers if m.tool_call_id == "r1")
    if "read ran" in str(r1.content):
        assert ("read", "r1", {"item": "i"}) in ledger.runs, (where, ledger.runs)
    assert next(m for m in answers if m.tool_call_id == "p1").status == "error"


@pytest.mark.parametrize("kind", KINDS)
def test_a_sync_stream_closed_while_the_tool_works_then_resumed_at_once(
    engine: EmbeddedPolicy, kind: str
) -> None:
    ledger = Ledger()
    graph = build(engine, kind, ledger, "sync")
    config = thread_config(f"rt46-intool-sync-{kind}")
    ctx = {"user": USER}
    stream = graph.stream(
        {"messages": [("user", "go")]}, config, context=ctx, stream_mode=["custom", "updates"]
    )
    for event in stream:
        if is_started(event):
            break
    stream.close()
    graph.invoke(None, config, context=ctx)
    graph.invoke({"messages": [("user", "more")]}, config, context=ctx)
    check(graph, ledger, config, f"sync {kind}")


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_async_stream_closed_while_the_tool_works_then_resumed_at_once(
    engine: EmbeddedPolicy, kind: str, flavour: str
) -> None:
    ledger = Ledger()
    graph = build(engine, kind, ledger, flavour)
    config = thread_config(f"rt46-intool-async-{kind}-{flavour}")
    ctx = {"user": USER}

    async def main() -> None:
        stream = graph.astream(
            {"messages": [("user", "go")]}, config, context=ctx, stream_mode=["custom", "updates"]
        )
        async for event in stream:
            if is_started(event):
                break
        await stream.aclose()
        await graph.ainvoke(None, config, context=ctx)
        await graph.ainvoke({"messages": [("user", "more")]}, config, context=ctx)

    asyncio.run(main())
    check(graph, ledger, config, f"async {kind} {flavour}")
