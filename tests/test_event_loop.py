"""The event loop never waits on the guard: every async path, measured with a 1 ms ticker.

OPA sits behind a fault proxy that holds every policy request for 0.3 s, so a single
blocking call on the loop shows up as a lag of about 300 ms; the limit is 50 ms. A ticker
task sleeps 1 ms at a time and records how late it wakes up. The garbage collector is
paused while measuring: its pauses are the interpreter's, not the guard's. On a loaded
machine the process may go unscheduled for tens of milliseconds, so a path gets up to three
runs and its least lag counts: a blocking call stalls every run.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy
from langchain.agents import create_agent
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode
from langgraph.types import Command
from test_approval import INTERNAL as REVIEWER
from test_approval import exfiltration_model
from test_guard_node import INTERNAL, check_mixed_result, mixed_turn_model
from test_integrations import check_mixed, plain_agent

from langchain_opa_guard import (
    DecisionLog,
    EmbeddedPolicy,
    OPAGuardMiddleware,
    OPAServer,
    PolicyGuardNode,
    ToolCallGuard,
    guard_tools,
)
from langchain_opa_guard.demo import build_agent, customer_db_tools
from langchain_opa_guard.demo.web import web_tools
from langchain_opa_guard.testing import ScriptedChatModel

LIMIT = 0.050
STALL = 0.3
GO = {"messages": [("user", "go")]}


async def worst_lag(work: Awaitable[Any]) -> tuple[Any, float]:
    """Run ``work`` beside a 1 ms ticker; its result and the ticker's worst lateness."""
    worst = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal worst
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)  # the ticker is running before the work starts
    try:
        result = await work
    finally:
        done.set()
        await ticker
    return result, worst


def measure(make: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(worst_lag(make()))
    finally:
        gc.enable()


@pytest.fixture(scope="module", autouse=True)
def warmed_up(embedded: EmbeddedPolicy) -> None:
    """Run every surface once first: lazy imports and first-call set-up inside LangChain
    and LangGraph happen on the loop, once per process, and are not what is measured."""
    tools = customer_db_tools()[0]
    node = ToolNode(tools, awrap_tool_call=ToolCallGuard(embedded, registry=tools).awrap_tool_call)
    middleware = OPAGuardMiddleware(embedded, registry=tools, visibility=True)
    for graph in (
        build_agent(embedded, mixed_turn_model(), tools),
        plain_agent(mixed_turn_model(), node),
        create_agent(mixed_turn_model(), tools, middleware=[middleware]),
        create_agent(mixed_turn_model(), guard_tools(tools, embedded)),
    ):
        asyncio.run(graph.ainvoke(GO, context={"user": INTERNAL}))


@pytest.fixture
def stalled(opa_url: str) -> Iterator[FaultProxy]:
    """OPA behind a proxy; switch it to ``delay`` once the engine has started up."""
    with FaultProxy(opa_url) as running:
        yield running


def stall(proxy: FaultProxy) -> None:
    proxy.set("delay", delay=STALL)


def least_lag(attempt: Callable[[], float], tries: int = 3) -> float:
    """The smallest worst-lag of up to ``tries`` runs of ``attempt`` (each checks its own
    results). A blocking call stalls the loop on every run; a busy machine that merely did
    not schedule the process for a moment does not do so every time."""
    lags = []
    for _ in range(tries):
        lags.append(attempt())
        if lags[-1] < LIMIT:
            break
    return min(lags)


def assert_free(lag: float) -> None:
    assert lag < LIMIT, f"the loop stalled {lag * 1000:.0f} ms"


@pytest.mark.parametrize("batch", [False, True])
def test_the_guard_node(stalled: FaultProxy, batch: bool) -> None:
    engine = OPAServer(stalled.url, batch=batch)
    stall(stalled)

    def attempt() -> float:
        tools, db = customer_db_tools()
        graph = build_agent(engine, mixed_turn_model(), tools)
        result, lag = measure(lambda: graph.ainvoke(GO, context={"user": INTERNAL}))
        check_mixed_result(result, db)
        return lag

    assert_free(least_lag(attempt))


def test_the_guard_node_on_the_embedded_engine(embedded: EmbeddedPolicy) -> None:
    def attempt() -> float:
        tools, db = customer_db_tools()
        graph = build_agent(embedded, mixed_turn_model(), tools)
        result, lag = measure(lambda: graph.ainvoke(GO, context={"user": INTERNAL}))
        check_mixed_result(result, db)
        return lag

    assert_free(least_lag(attempt))


def test_the_resume_recheck(stalled: FaultProxy) -> None:
    """On resume the guard decides the approved call again: not on the loop."""
    engine = OPAServer(stalled.url)
    runs = iter(range(100))

    def attempt() -> float:
        stalled.set("pass")
        tools, outbox = web_tools()
        graph = build_agent(engine, exfiltration_model(), tools, checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": f"loop-resume-{next(runs)}"}}
        first = asyncio.run(
            graph.ainvoke({"messages": [("user", "read")]}, config, context={"user": REVIEWER})
        )
        assert "__interrupt__" in first
        stall(stalled)
        before = len(stalled.requests)
        _, lag = measure(
            lambda: graph.ainvoke(Command(resume="approve"), config, context={"user": REVIEWER})
        )
        assert outbox.sent, "the approved email was sent"
        assert any("v1/data" in path for _, path, _, _ in stalled.requests[before:])
        return lag

    assert_free(least_lag(attempt))


def test_the_tool_node_interceptor(stalled: FaultProxy) -> None:
    engine = OPAServer(stalled.url)
    stall(stalled)

    def attempt() -> float:
        tools, db = customer_db_tools()
        guard = ToolCallGuard(engine, registry=tools)
        node = ToolNode(
            tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
        )
        graph = plain_agent(mixed_turn_model(), node)
        result, lag = measure(lambda: graph.ainvoke(GO, context={"user": INTERNAL}))
        check_mixed(result["messages"], db)
        return lag

    assert_free(least_lag(attempt))


def test_the_middleware_with_visibility(stalled: FaultProxy) -> None:
    """``visibility=True`` asks the policy which tools to bind before each model call."""
    engine = OPAServer(stalled.url)
    stall(stalled)
    tools = [*customer_db_tools()[0], *web_tools()[0]]

    def attempt() -> float:
        bound: list[list[str]] = []

        class Recording(ScriptedChatModel):
            def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
                bound.append([getattr(t, "name", "") for t in tools])
                return self

        agent = create_agent(
            Recording(script=["hello"]),
            tools,
            middleware=[OPAGuardMiddleware(engine, registry=tools, visibility=True)],
        )
        _, lag = measure(
            lambda: agent.ainvoke({"messages": [("user", "hi")]}, context={"user": INTERNAL})
        )
        assert bound == [["get_customer_details", "fetch_url", "send_email"]]
        return lag

    assert_free(least_lag(attempt))


def test_guarded_tools(stalled: FaultProxy) -> None:
    engine = OPAServer(stalled.url)
    stall(stalled)

    def attempt() -> float:
        tools, db = customer_db_tools()
        agent = create_agent(mixed_turn_model(), guard_tools(tools, engine))
        result, lag = measure(lambda: agent.ainvoke(GO, context={"user": INTERNAL}))
        check_mixed(result["messages"], db)
        return lag

    assert_free(least_lag(attempt))


def test_the_engine_itself(stalled: FaultProxy) -> None:
    engine = OPAServer(stalled.url)
    stall(stalled)
    document = {"tool": {"name": "fetch_url", "args": {}}, "user": INTERNAL}

    async def work() -> Any:
        return await asyncio.gather(
            engine.adecide(document),
            engine.adecide_many([document, document]),
            engine.aquery(
                "agent/authz/visible_tools",
                {
                    "user": INTERNAL,
                    "tools": [
                        {"name": n, "metadata": {}} for n in ("send_email", "delete_customer")
                    ],
                },
            ),
            engine.acurrent_revision(),
        )

    def attempt() -> float:
        (decision, turn, visible, _), lag = measure(work)
        assert decision.error is None and all(d.error is None for d in turn)
        assert "send_email" in visible and "delete_customer" not in visible
        return lag

    assert_free(least_lag(attempt))


@pytest.mark.parametrize("surface", ["guard node", "interceptor"])
def test_the_decision_log(tmp_path: Path, opa_server: OPAServer, surface: str) -> None:
    """The log is a file (here a FIFO whose reader comes late, as a slow disk would):
    writing it never holds up the loop."""
    runs = iter(range(100))

    def attempt() -> float:
        fifo = tmp_path / f"decisions-{next(runs)}.fifo"
        os.mkfifo(fifo)
        lines: list[bytes] = []

        def late_reader() -> None:
            time.sleep(STALL)
            with open(fifo, "rb") as handle:
                lines.extend(handle.read().splitlines())

        reader = threading.Thread(target=late_reader)
        log = DecisionLog(fifo)
        tools, db = customer_db_tools()
        if surface == "guard node":
            guard = PolicyGuardNode(opa_server, registry=tools, decision_log=log)
            graph = build_agent(opa_server, mixed_turn_model(), tools, guard=guard)
        else:
            interceptor = ToolCallGuard(opa_server, registry=tools, decision_log=log)
            node = ToolNode(tools, awrap_tool_call=interceptor.awrap_tool_call)
            graph = plain_agent(mixed_turn_model(), node)

        async def work() -> Any:
            reader.start()  # it opens the FIFO STALL seconds after the run starts
            return await graph.ainvoke(GO, context={"user": INTERNAL})

        result, lag = measure(work)
        log.close()
        reader.join()
        check_mixed(result["messages"], db)
        assert len(lines) == 3
        return lag

    assert_free(least_lag(attempt))
