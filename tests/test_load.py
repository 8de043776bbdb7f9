"""Under load: ``timeout`` bounds the whole decision, pools are per engine and bounded, and
an engine releases what it holds on ``close()``.

A fault proxy in front of the real OPA stalls (``delay``) to make the queues visible.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fault_proxy import FaultProxy
from test_guard_node import INTERNAL, check_mixed_result, mixed_turn_model

from langchain_opa_guard import ErrorType, OPAServer
from langchain_opa_guard.demo import build_agent, customer_db_tools

READ = {
    "version": 1,
    "tool": {
        "name": "get_customer_details",
        "args": {"customer_id": "CUST-001", "fields": {"name": True}},
        "call_id": "probe",
        "metadata": {"toolkit": "CustomerDBTool"},
    },
    "user": INTERNAL,
    "context": {},
    "turn": [],
    "history": [],
}
"""A read the shipped policy allows an internal user."""


@pytest.fixture
def proxy(opa_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(opa_url) as running:
        yield running


def guard_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("opa-guard-")}


def test_256_concurrent_adecide_each_end_near_the_timeout(proxy: FaultProxy) -> None:
    """With OPA stalled, decisions queued behind the 32 connections still end at
    ``timeout`` after the call, not after their turn in the queue plus ``timeout``."""
    client = OPAServer(proxy.url, timeout=0.5)
    proxy.set("delay", delay=3.0)

    async def timed() -> tuple[str | None, float]:
        started = time.perf_counter()
        decision = await client.adecide(READ)
        return decision.error, time.perf_counter() - started

    async def all_of_them() -> list[tuple[str | None, float]]:
        return await asyncio.gather(*(timed() for _ in range(256)))

    results = asyncio.run(all_of_them())
    client.close()
    assert {error for error, _ in results} == {ErrorType.TIMEOUT}
    slowest = max(elapsed for _, elapsed in results)
    assert slowest < 1.0, f"the slowest of 256 decisions took {slowest:.2f}s with timeout=0.5"


def test_a_large_turn_ends_near_the_timeout(proxy: FaultProxy) -> None:
    """``decide_many`` with more calls than connections: the queued calls' time counts."""
    client = OPAServer(proxy.url, timeout=0.5, max_connections=8)
    proxy.set("delay", delay=3.0)
    started = time.perf_counter()
    decisions = client.decide_many([READ] * 64)
    elapsed = time.perf_counter() - started
    client.close()
    assert {d.error for d in decisions} == {ErrorType.TIMEOUT}
    assert elapsed < 1.0, f"a turn of 64 calls took {elapsed:.2f}s with timeout=0.5"


def test_max_connections_is_a_hard_cap(proxy: FaultProxy) -> None:
    """64 threads deciding at once over ``max_connections=8`` open at most 8 sockets."""
    client = OPAServer(proxy.url, max_connections=8)
    proxy.set("delay", delay=0.05)  # every request overlaps the others
    before = proxy.connections
    barrier = threading.Barrier(64)
    allowed: list[bool] = []

    def decide() -> None:
        barrier.wait()
        allowed.append(client.decide(READ).allow)

    threads = [threading.Thread(target=decide) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert allowed == [True] * 64
    opened = proxy.connections - before
    assert opened <= 8, f"max_connections=8 opened {opened} connections"


def test_a_stalled_engine_does_not_hold_up_another_engines_guard(
    proxy: FaultProxy, opa_url: str
) -> None:
    """Each engine has its own worker pool: the turns waiting on a stalled OPA do not
    queue the turns of a guard on a healthy one."""
    stalled = OPAServer(proxy.url, timeout=2.0)
    healthy = OPAServer(opa_url)
    proxy.set("delay", delay=5.0)
    stuck = [
        threading.Thread(
            target=lambda: build_agent(stalled, mixed_turn_model(), customer_db_tools()[0]).invoke(
                {"messages": [("user", "go")]}, context={"user": INTERNAL}
            )
        )
        for _ in range(24)
    ]
    for thread in stuck:
        thread.start()
    time.sleep(0.3)  # 72 calls now wait on the stalled engine
    tools, db = customer_db_tools()
    graph = build_agent(healthy, mixed_turn_model(), tools)
    started = time.perf_counter()
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": INTERNAL})
    elapsed = time.perf_counter() - started
    for thread in stuck:
        thread.join()
    stalled.close()
    healthy.close()
    check_mixed_result(result, db)
    assert elapsed < 1.0, f"a healthy engine's turn waited {elapsed:.2f}s behind a stalled one"


def test_close_and_with_release_the_threads(opa_url: str) -> None:
    before = guard_threads()
    with OPAServer(opa_url) as client:
        assert all(d.allow for d in client.decide_many([READ] * 4))
        started = guard_threads() - before
        assert started, "decide_many ran on the engine's own threads"
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in started) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.is_alive() for t in started), "close() left the worker threads running"
    # A closed engine opens again on the next call rather than failing.
    assert client.decide(READ).allow
    assert all(d.allow for d in client.decide_many([READ] * 2))
    client.close()


def test_async_with_closes_the_engine(opa_url: str) -> None:
    before = guard_threads()

    async def use() -> tuple[bool, set[threading.Thread]]:
        async with OPAServer(opa_url) as client:
            allowed = (await client.adecide(READ)).allow
            return allowed, guard_threads() - before

    allowed, started = asyncio.run(use())
    assert allowed and started
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in started) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.is_alive() for t in started)


@pytest.mark.parametrize(
    ("argument", "value"),
    [("timeout", 0), ("timeout", -1.0), ("max_connections", 0), ("max_response_bytes", 0)],
)
def test_bad_sizes_raise_at_construction(opa_url: str, argument: str, value: Any) -> None:
    with pytest.raises(ValueError, match=argument):
        OPAServer(opa_url, **{argument: value})
