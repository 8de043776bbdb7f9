"""Red team 46: a stream closed early at every event, then the thread continued (all pass
here: pins).

The attack: the model proposes turn ``a1``: ``read`` (``r1``, allowed) beside ``pay`` of 5000
(``p1``, denied). The run is streamed (``stream`` / ``astream``) in each ``stream_mode``
("updates", "messages", "values", "custom", "debug", several at once, with and without
``subgraphs=True``) and the stream is closed (``break``; ``aclose()``) after its k-th event,
for every k; the thread is then continued with ``invoke(None, config)`` and a new message, or
with a new message at once. Guard node, guard edge, ``ToolNode`` interceptor and middleware.

Expected, and observed: the denied payment never runs; ``r1`` runs at most once; at the end
every call of the turn has exactly one answer; an answer saying "read ran" means the tool ran;
nothing runs after the continuation has returned (no task left running in the background);
the thread ends with nothing pending.

Not a finding (LangGraph, and the README's wiring): ``astream(stream_mode="messages")`` closed
at the model's message leaves the thread with that message saved and nothing pending
(``get_state().next == ()``), so ``invoke(None)`` does not run the turn; a plain ``ToolNode``
graph (the interceptor's) then leaves its calls unanswered unless ``answer_open_calls`` is
wired before the model, as the README wires it. The interceptor graph here has it.

The async test closes the stream in fewer modes than the sync one: the points where a stream
can be cut are the same.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
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

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call

KINDS = ("node", "edge", "interceptor", "middleware")
MODES: list[tuple[Any, bool]] = [
    ("updates", False),
    ("messages", False),
    ("values", False),
    ("custom", False),
    ("debug", False),
    (["updates", "messages", "values"], False),
    ("updates", True),
    (["values", "messages"], True),
]
# The async stream is cut in the modes whose events fall at different points.
ASYNC_MODES: list[tuple[Any, bool]] = [
    ("updates", False),
    ("messages", False),
    ("debug", False),
    (["values", "messages"], True),
]
MAX_EVENTS = 10


def script() -> Script:
    a1 = turn(tool_call("read", {"item": "i"}, "r1"), tool_call("pay", {"amount": 5000}, "p1"))
    return Script([a1, "ok", "ok", "ok"])


def build(engine: EmbeddedPolicy, kind: str, ledger: Ledger) -> Any:
    """Checkpointed, and a plain ``ToolNode`` (the interceptor's) has no repair of its own, so
    every graph but ``create_agent`` answers a cut-off turn's open calls before the model, as
    the README wires ``answer_open_calls``."""
    return wired_graph(engine, kind, mediation_tools(ledger), script(), answer_open=True)


def check(graph: Any, ledger: Ledger, config: Any, where: str) -> None:
    before = list(ledger.runs)
    time.sleep(0.05)
    assert ledger.runs == before, f"{where}: a tool ran after the run returned {ledger.runs}"
    assert all(name != "pay" for name, _, _ in ledger.runs), (where, ledger.runs)
    reads = sum(1 for name, i, _ in ledger.runs if i == "r1")
    assert reads <= 1, (where, ledger.runs)
    state = graph.get_state(config)
    assert not state.next, (where, state.next)
    msgs = state.values["messages"]
    at = next(i for i, m in enumerate(msgs) if isinstance(m, AIMessage) and m.tool_calls)
    answers = [m for m in msgs[at + 1 :] if isinstance(m, ToolMessage)]
    ids = sorted(m.tool_call_id for m in answers)
    assert ids == ["p1", "r1"], (where, ids, msgs)
    r1 = next(m for m in answers if m.tool_call_id == "r1")
    if "read ran" in str(r1.content):
        assert reads == 1, (where, ledger.runs)
    p1 = next(m for m in answers if m.tool_call_id == "p1")
    assert p1.status == "error", (where, p1)


def continue_sync(graph: Any, config: Any, how: str) -> None:
    ctx = {"user": USER}
    if how == "resume":
        graph.invoke(None, config, context=ctx)
    graph.invoke({"messages": [("user", "more")]}, config, context=ctx)


async def continue_async(graph: Any, config: Any, how: str) -> None:
    ctx = {"user": USER}
    if how == "resume":
        await graph.ainvoke(None, config, context=ctx)
    await graph.ainvoke({"messages": [("user", "more")]}, config, context=ctx)


def hows(kind: str) -> list[str]:
    return ["resume", "message"]


@pytest.mark.parametrize(("mode", "subgraphs"), MODES, ids=lambda v: str(v))
@pytest.mark.parametrize("kind", KINDS)
def test_a_sync_stream_broken_off_at_each_event(
    engine: EmbeddedPolicy, kind: str, mode: Any, subgraphs: bool
) -> None:
    for how in hows(kind):
        for k in range(MAX_EVENTS):
            ledger = Ledger()
            graph = build(engine, kind, ledger)
            config = thread_config(f"rt46-sync-{kind}-{mode}-{subgraphs}-{how}-{k}")
            stream = graph.stream(
                {"messages": [("user", "go")]},
                config,
                context={"user": USER},
                stream_mode=mode,
                subgraphs=subgraphs,
            )
            for i, _ in enumerate(stream):
                if i == k:
                    break
            stream.close()
            continue_sync(graph, config, how)
            check(graph, ledger, config, f"sync {kind} {mode} {subgraphs} {how} k={k}")


@pytest.mark.parametrize(("mode", "subgraphs"), ASYNC_MODES, ids=lambda v: str(v))
@pytest.mark.parametrize("kind", KINDS)
def test_an_async_stream_closed_at_each_event(
    engine: EmbeddedPolicy, kind: str, mode: Any, subgraphs: bool
) -> None:
    async def main() -> None:
        for how in hows(kind):
            for k in range(MAX_EVENTS):
                ledger = Ledger()
                graph = build(engine, kind, ledger)
                config = thread_config(f"rt46-async-{kind}-{mode}-{subgraphs}-{how}-{k}")
                stream = graph.astream(
                    {"messages": [("user", "go")]},
                    config,
                    context={"user": USER},
                    stream_mode=mode,
                    subgraphs=subgraphs,
                )
                i = 0
                async for _ in stream:
                    if i == k:
                        break
                    i += 1
                await stream.aclose()
                await continue_async(graph, config, how)
                check(graph, ledger, config, f"async {kind} {mode} {subgraphs} {how} k={k}")

    asyncio.run(main())
