"""Forked processes: gunicorn ``--preload``, Celery prefork, ``multiprocessing`` with fork.

The engine and the guard are created and warmed up in the parent (a kept-alive connection in
the pool, worker threads started), then the process forks. A child must never read a reply
meant for its parent (or the reverse), and nothing may wait on threads that only exist in
the parent. Real forks, a real OPA; a child that hangs is killed and the test fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
import requests
from test_guard_node import INTERNAL, check_mixed_result, mixed_turn_model

from langchain_opa_guard import OPAServer, PolicyEngine
from langchain_opa_guard.demo import build_agent, customer_db_tools

ROUNDS = 60
CHILD_DEADLINE = 30.0


def delete_request(role: str, call_id: str) -> dict[str, Any]:
    """``delete_customer``: allowed for an admin, denied for a guest."""
    tool = {
        "name": "delete_customer",
        "args": {"customer_id": "CUST-003"},
        "call_id": call_id,
        "metadata": {"toolkit": "CustomerDBTool"},
    }
    return {
        "version": 1,
        "tool": tool,
        "user": {"id": f"{role}-1", "role": role},
        "context": {},
        "turn": [tool],
        "history": [],
    }


def verdicts(engine: OPAServer, role: str, rounds: int = ROUNDS) -> list[bool]:
    return [engine.decide(delete_request(role, f"{role}-{i}")).allow for i in range(rounds)]


def in_child(work: Callable[[], Any], parent_work: Callable[[], Any] | None = None) -> Any:
    """Fork; run ``work`` in the child (its JSON result comes back over a pipe) while the
    parent runs ``parent_work``. A child still running after ``CHILD_DEADLINE`` is killed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            payload = json.dumps({"result": work()})
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            payload, code = json.dumps({"error": repr(exc)}), 1
        try:
            os.write(write_end, payload.encode())
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        if parent_work is not None:
            parent_work()
        chunks: list[bytes] = []
        deadline = time.monotonic() + CHILD_DEADLINE
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(left, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child hung (still running after {CHILD_DEADLINE:g}s)")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    os.waitpid(pid, 0)
    reply = json.loads(b"".join(chunks) or b'{"error": "no reply"}')
    assert "error" not in reply, f"the child failed: {reply['error']}"
    return reply["result"]


@pytest.fixture(params=["pool", "session"])
def warm_engine(request: pytest.FixtureRequest, opa_url: str) -> Iterator[OPAServer]:
    """An engine that has decided sync, async and a turn: an idle kept-alive connection
    in its pool, its worker threads running."""
    options: dict[str, Any] = {"session": requests.Session()} if request.param == "session" else {}
    engine = OPAServer(opa_url, **options)
    assert engine.decide(delete_request("admin", "warm")).allow
    assert asyncio.run(engine.adecide(delete_request("admin", "warm"))).allow
    assert all(d.allow for d in engine.decide_many([delete_request("admin", "a")] * 3))
    yield engine
    engine.close()


def test_parent_and_child_never_read_each_others_verdicts(warm_engine: OPAServer) -> None:
    """The child (a guest) and the parent (an admin) decide at the same time on what was
    one pool before the fork: every guest delete is denied, every admin delete allowed."""
    parent: list[bool] = []
    child = in_child(
        lambda: verdicts(warm_engine, "guest"),
        lambda: parent.extend(verdicts(warm_engine, "admin")),
    )
    assert child.count(True) == 0, f"a guest's delete was allowed {child.count(True)} times"
    assert parent == [True] * ROUNDS, f"an admin's delete was denied {parent.count(False)} times"


def test_a_forked_child_decides_async_and_turns(warm_engine: OPAServer) -> None:
    """``adecide`` and ``decide_many`` need worker threads: the child gets its own."""

    def work() -> dict[str, list[bool]]:
        async def one_by_one() -> list[bool]:
            requests_ = [delete_request("guest", f"g-{i}") for i in range(4)]
            return [(await warm_engine.adecide(r)).allow for r in requests_]

        async def together() -> list[bool]:
            requests_ = [delete_request("guest", f"g-{i}") for i in range(8)]
            return [d.allow for d in await asyncio.gather(*map(warm_engine.adecide, requests_))]

        turn = [delete_request("admin", f"a-{i}") for i in range(2)]
        return {
            "async": asyncio.run(one_by_one()),
            "gathered": asyncio.run(together()),
            "turn": [d.allow for d in warm_engine.decide_many(turn)],
        }

    result = in_child(work)
    assert result == {"async": [False] * 4, "gathered": [False] * 8, "turn": [True] * 2}


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_the_guard_node_works_in_a_forked_child(engine: PolicyEngine, mode: str) -> None:
    """The guard's own thread pools (a turn's calls decided concurrently; in-process
    evaluation off the event loop) were started in the parent; the child's turns finish."""
    tools, db = customer_db_tools()
    graph = build_agent(engine, mixed_turn_model(), tools)
    check_mixed_result(graph.invoke({"messages": [("user", "go")]}, context={"user": INTERNAL}), db)
    warm = asyncio.run(graph.ainvoke({"messages": [("user", "go")]}, context={"user": INTERNAL}))
    assert warm["messages"][-1].content == "done"

    def work() -> list[Any]:
        tools, db = customer_db_tools()
        graph = build_agent(engine, mixed_turn_model(), tools)
        inputs = {"messages": [("user", "go")]}
        if mode == "invoke":
            result = graph.invoke(inputs, context={"user": INTERNAL})
        else:
            result = asyncio.run(graph.ainvoke(inputs, context={"user": INTERNAL}))
        check_mixed_result(result, db)
        return [m.type for m in result["messages"]]

    assert in_child(work)[-1] == "ai"


# -- a process pool with the fork start method --------------------------------------

_POOL_ENGINE: OPAServer | None = None


def _decide_in_worker(role: str) -> dict[str, list[bool]]:
    """Runs in a pool worker forked from the test process, on the engine it inherited."""
    assert _POOL_ENGINE is not None
    engine = _POOL_ENGINE

    async def one_by_one() -> list[bool]:
        inputs = [delete_request(role, f"{role}-async-{i}") for i in range(4)]
        return [(await engine.adecide(i)).allow for i in inputs]

    inputs = [delete_request(role, f"{role}-turn-{i}") for i in range(2)]
    return {
        "sync": verdicts(engine, role, 20),
        "async": asyncio.run(one_by_one()),
        "turn": [d.allow for d in engine.decide_many(inputs)],
    }


def test_a_fork_process_pool_decides_correctly(warm_engine: OPAServer) -> None:
    global _POOL_ENGINE
    _POOL_ENGINE = warm_engine
    roles = ["guest", "admin", "guest", "admin"]
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=2, mp_context=context)
    try:
        futures = [pool.submit(_decide_in_worker, role) for role in roles]
        parent = verdicts(warm_engine, "admin")  # the parent keeps deciding meanwhile
        results = [future.result(timeout=CHILD_DEADLINE) for future in futures]
    except concurrent.futures.TimeoutError:  # TimeoutError itself from 3.11 on
        for process in multiprocessing.active_children():
            process.kill()
        pytest.fail("a forked pool worker hung")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        _POOL_ENGINE = None
    assert parent == [True] * ROUNDS
    for role, result in zip(roles, results, strict=True):
        expected = role == "admin"
        for side, allowed in result.items():
            assert allowed == [expected] * len(allowed), f"{role} {side}: {allowed}"
