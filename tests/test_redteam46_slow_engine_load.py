"""Red team 46: a real OPA made slow under load (the fault proxy), many runs at once through
one compiled graph and one ``OPAServer`` with a small ``timeout=`` and few connections (all
pass here: pins).

The attack: 32 threads run turn ``a1`` (``read`` ``r1`` allowed, ``pay`` 5000 ``p1`` denied) at
once through one graph while OPA answers late (the proxy holds each reply): decisions queue for
the client's connections and workers, time out, or arrive just in time; half of the runs are
cancelled while they wait. Then OPA is fast again and a new run goes through.

Expected, and observed: the whole batch ends within about one ``timeout`` (time queued counts),
not one per wave of connections; a decision that timed out runs nothing and says so without
internals; the denied payment never runs; each call of each thread is answered once; once OPA
answers again, a run decides and runs its allowed call (cancelled requests left no connection
or worker taken).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fault_proxy import FaultProxy
from langchain_core.messages import AIMessage, ToolMessage
from mediation_kit import (
    POLICY,
    USER,
    Ledger,
    Script,
    mediation_tools,
    thread_config,
    turn,
    wired_graph,
)

from langchain_opa_guard import OPAServer
from langchain_opa_guard.testing import tool_call

KINDS = ("node", "edge", "interceptor", "middleware")
TIMEOUT = 0.25
N = 32


@pytest.fixture
def proxy(opa_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(opa_url) as running:
        yield running


def script() -> Script:
    a1 = turn(tool_call("read", {"item": "i"}, "r1"), tool_call("pay", {"amount": 5000}, "p1"))
    return Script([a1, "ok", "ok"])


def check_thread(graph: Any, ledger: Ledger, thread: str, where: str) -> None:
    msgs = graph.get_state(thread_config(thread)).values.get("messages", [])
    if not msgs:  # cancelled before its first step was saved
        return
    at = [i for i, m in enumerate(msgs) if isinstance(m, AIMessage) and m.tool_calls]
    if not at:
        return
    answers = [m for m in msgs[at[0] + 1 :] if isinstance(m, ToolMessage)]
    ids = [m.tool_call_id for m in answers]
    assert len(ids) == len(set(ids)), (where, thread, ids)
    for m in answers:
        text = str(m.content)
        assert "Traceback" not in text and "127.0.0.1" not in text, (where, m)
        if m.tool_call_id == "p1":
            assert m.status == "error", (where, m)


@pytest.mark.parametrize("kind", KINDS)
def test_many_runs_against_a_silent_opa_end_within_one_timeout(
    proxy: FaultProxy, kind: str
) -> None:
    client = OPAServer(proxy.url, policy=POLICY, timeout=TIMEOUT, max_connections=4)
    ledger = Ledger()
    graph = wired_graph(client, kind, mediation_tools(ledger), script())
    proxy.set("delay", delay=2.0)

    async def main() -> float:
        started = time.monotonic()
        await asyncio.gather(
            *(
                graph.ainvoke(
                    {"messages": [("user", "go")]},
                    thread_config(f"rt46-load-{kind}-{i}"),
                    context={"user": USER},
                )
                for i in range(N)
            )
        )
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    try:
        assert elapsed < 1.5, f"{N} runs took {elapsed:.2f}s with timeout={TIMEOUT}"
        assert ledger.runs == []
        for i in range(N):
            thread = f"rt46-load-{kind}-{i}"
            msgs = graph.get_state(thread_config(thread)).values["messages"]
            answers = {m.tool_call_id: m for m in msgs if isinstance(m, ToolMessage)}
            assert sorted(answers) == ["p1", "r1"], (thread, msgs)
            assert f"did not answer within {TIMEOUT:g}s" in str(answers["r1"].content), answers
            check_thread(graph, ledger, thread, kind)
        proxy.set("pass")
        after = thread_config(f"rt46-load-{kind}-after")
        started = time.monotonic()
        asyncio.run(graph.ainvoke({"messages": [("user", "go")]}, after, context={"user": USER}))
        assert time.monotonic() - started < 1.0
        assert [i for _, i, _ in ledger.runs] == ["r1"]
    finally:
        client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_half_the_runs_cancelled_while_opa_is_slow(proxy: FaultProxy, kind: str) -> None:
    client = OPAServer(proxy.url, policy=POLICY, timeout=TIMEOUT, max_connections=2)
    ledger = Ledger()
    graph = wired_graph(client, kind, mediation_tools(ledger), script())
    proxy.set("delay", delay=0.1)  # some decisions arrive in time, queued ones do not

    async def main() -> float:
        tasks = [
            asyncio.ensure_future(
                graph.ainvoke(
                    {"messages": [("user", "go")]},
                    thread_config(f"rt46-half-{kind}-{i}"),
                    context={"user": USER},
                )
            )
            for i in range(N)
        ]
        await asyncio.sleep(0.05)
        for task in tasks[::2]:
            task.cancel()
        started = time.monotonic()
        await asyncio.gather(*tasks, return_exceptions=True)
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    try:
        assert elapsed < 2.0, f"the runs left took {elapsed:.2f}s with timeout={TIMEOUT}"
        time.sleep(0.3)  # any worker still holding a request has passed its deadline
        ran = [i for _, i, _ in ledger.runs]
        assert "p1" not in ran
        for i in range(N):
            check_thread(graph, ledger, f"rt46-half-{kind}-{i}", kind)
        proxy.set("pass")
        before = len(ledger.runs)
        after = thread_config(f"rt46-half-{kind}-after")
        started = time.monotonic()
        asyncio.run(graph.ainvoke({"messages": [("user", "go")]}, after, context={"user": USER}))
        assert time.monotonic() - started < 1.0
        assert [i for _, i, _ in ledger.runs[before:]] == ["r1"]
    finally:
        client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_sync_batch_against_a_silent_opa_ends_within_one_timeout(
    proxy: FaultProxy, kind: str
) -> None:
    client = OPAServer(proxy.url, policy=POLICY, timeout=TIMEOUT, max_connections=4)
    ledger = Ledger()
    graph = wired_graph(client, kind, mediation_tools(ledger), script())
    proxy.set("delay", delay=2.0)
    configs = [
        {"configurable": {"thread_id": f"rt46-sbatch-{kind}-{i}", "user": USER}} for i in range(16)
    ]
    started = time.monotonic()
    graph.batch([{"messages": [("user", "go")]}] * 16, configs)
    elapsed = time.monotonic() - started
    try:
        assert elapsed < 1.5, f"16 runs took {elapsed:.2f}s with timeout={TIMEOUT}"
        assert ledger.runs == []
        for config in configs:
            check_thread(graph, ledger, config["configurable"]["thread_id"], kind)
    finally:
        client.close()
