"""Benchmark 5: many concurrent conversations against one OPA, and the embedded engine
under threads.

1. 200 concurrent async conversations (``graph.ainvoke`` on the guarded demo agent with an
   ``OPAServer``, one ReAct round of 3 allowed calls each, several conversations per task):
   decisions/s, and the latency of each decision as the guard sees it (the engine is wrapped
   in a proxy that times every ``adecide``).
2. The engine alone: 200 concurrent tasks, each awaiting ``adecide`` K times in a row.
3. During both, a ticker task sleeps 1 ms at a time and records how late it wakes: the
   event loop's lag. A blocking call on the loop would show as a lag as long as the call.
4. The embedded engine under threads: a ``ThreadPoolExecutor`` of 1, 2 or 4 threads
   calling ``decide``; decisions/s, the thread counts interleaved round by round.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import POLICIES, ms, percentile, start_opa
from harness import (
    ADMIN,
    INPUTS,
    NotedTable,
    admin_model,
    check_answered,
    median,
    ratio,
    timed_rounds,
    turn_documents,
)

from langchain_opa_guard import Decision, EmbeddedPolicy, OPAServer
from langchain_opa_guard.demo import build_agent, customer_db_tools

TASKS = 200
POOL = 32  # OPAServer's default max_connections
CONVERSATIONS_PER_TASK = 3
CALLS = 3
DECISIONS_PER_TASK = 10
THREADS = (1, 2, 4)
THREAD_DECISIONS = 240  # per timed block, split among the threads
THREAD_ROUNDS = 10


class TimedEngine:
    """A policy engine proxy that records how long each ``adecide``/``decide`` took."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.engine_name = engine.engine_name
        self.policy = engine.policy
        self.in_process = getattr(engine, "in_process", False)
        self.latencies: list[float] = []

    def decide(self, input: Mapping[str, Any]) -> Decision:
        start = time.perf_counter()
        try:
            return self.engine.decide(input)  # type: ignore[no-any-return]
        finally:
            self.latencies.append(time.perf_counter() - start)

    async def adecide(self, input: Mapping[str, Any]) -> Decision:
        start = time.perf_counter()
        try:
            return await self.engine.adecide(input)  # type: ignore[no-any-return]
        finally:
            self.latencies.append(time.perf_counter() - start)

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        return [self.decide(i) for i in inputs]

    async def adecide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        return list(await asyncio.gather(*(self.adecide(i) for i in inputs)))


class LoopWatch:
    """Times every callback the event loop runs (as asyncio's debug mode does).

    The longest one is the longest time any single piece of code held the loop: what a
    blocking call would show up as.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_what = ""
        self.gc_longest = 0.0
        self._gc_start = 0.0
        self._original: Any = None

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_longest = max(self.gc_longest, time.perf_counter() - self._gc_start)

    def __enter__(self) -> LoopWatch:
        original = self._original = asyncio.events.Handle._run
        watch = self

        def _run(handle: asyncio.events.Handle) -> None:
            start = time.perf_counter()
            try:
                original(handle)
            finally:
                spent = time.perf_counter() - start
                if spent > watch.longest:
                    watch.longest = spent
                    watch.longest_what = _describe(handle)

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]
        gc.callbacks.append(self._gc)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]
        gc.callbacks.remove(self._gc)


def _describe(handle: asyncio.events.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        return getattr(coro, "__qualname__", repr(coro))
    return getattr(callback, "__qualname__", repr(callback))


class Ticker:
    """Sleeps 1 ms at a time and records how late each wake-up is."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lags.append(time.perf_counter() - start - 0.001)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task


async def idle_lag(seconds: float = 1.0) -> list[float]:
    ticker = Ticker()
    ticker.start()
    await asyncio.sleep(seconds)
    await ticker.stop()
    return ticker.lags


async def conversations(server: OPAServer) -> dict[str, Any]:
    engine = TimedEngine(server)
    tools, _ = customer_db_tools()
    graph = build_agent(engine, admin_model(CALLS), tools)  # type: ignore[arg-type]
    check_answered(await graph.ainvoke(INPUTS, context={"user": ADMIN}), CALLS)
    engine.latencies.clear()

    async def conversation_task(i: int) -> None:
        for j in range(CONVERSATIONS_PER_TASK):
            config = {"configurable": {"thread_id": f"t-{i}-{j}"}}
            result = await graph.ainvoke(INPUTS, config, context={"user": ADMIN})
            check_answered(result, CALLS)

    ticker = Ticker()
    ticker.start()
    with LoopWatch() as watch:
        start = time.perf_counter()
        await asyncio.gather(*(conversation_task(i) for i in range(TASKS)))
        wall = time.perf_counter() - start
    await ticker.stop()
    await server.aclose()
    return {"wall": wall, "latencies": engine.latencies, "lags": ticker.lags, "watch": watch}


async def engine_load(server: OPAServer, tasks: int, per_task: int) -> dict[str, Any]:
    doc = turn_documents(1)[0]
    latencies: list[float] = []

    async def task() -> None:
        for _ in range(per_task):
            begin = time.perf_counter()
            decision = await server.adecide(doc)
            latencies.append(time.perf_counter() - begin)
            if not decision.allow:
                raise RuntimeError(f"unexpected decision: {decision}")

    await server.adecide(doc)
    ticker = Ticker()
    ticker.start()
    with LoopWatch() as watch:
        start = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(tasks)))
        wall = time.perf_counter() - start
    await ticker.stop()
    await server.aclose()
    return {"wall": wall, "latencies": latencies, "lags": ticker.lags, "watch": watch}


def threads_table() -> NotedTable:
    embedded = EmbeddedPolicy(POLICIES)
    doc = turn_documents(1)[0]
    pools = {n: ThreadPoolExecutor(n) for n in THREADS}

    def side(n: int) -> Any:
        pool = pools[n]
        share = THREAD_DECISIONS // n

        def work() -> None:
            for _ in range(share):
                embedded.decide(doc)

        def block() -> int:
            for future in [pool.submit(work) for _ in range(n)]:
                future.result()
            return share * n

        return block

    for n in THREADS:  # one compiled interpreter per thread: compile them before timing
        side(n)()
    samples = timed_rounds({f"{n}": side(n) for n in THREADS}, rounds=THREAD_ROUNDS, warmup=1)
    for pool in pools.values():
        pool.shutdown()
    embedded.close()
    table = NotedTable(
        f"Embedded engine under threads (decide on one input; {THREAD_DECISIONS} decisions "
        f"per block split among the threads; medians of {THREAD_ROUNDS} interleaved rounds)",
        ["threads", "decisions/s", "vs 1 thread", "time per decision"],
    )
    one = median(samples["1"])
    for n in THREADS:
        value = median(samples[f"{n}"])
        table.add(n, f"{1 / value:,.0f}", ratio(one, value), f"{value * 1e6:,.0f} µs")
    return table


def run() -> list[NotedTable]:
    opa = start_opa()
    server = OPAServer(opa.url)
    try:
        idle = asyncio.run(idle_lag())
        graph_load = asyncio.run(conversations(server))
        raw_load = asyncio.run(engine_load(server, TASKS, DECISIONS_PER_TASK))
        pool_load = asyncio.run(engine_load(server, POOL, TASKS * DECISIONS_PER_TASK // POOL))
    finally:
        server.close()
        opa.stop()

    load = NotedTable(
        f"{TASKS} concurrent async tasks against one OPA (loopback, OPAServer's default pool "
        "of 32 connections)",
        [
            "load",
            "decisions",
            "wall",
            "decisions/s",
            "decision p50",
            "decision p99",
            "decision max",
            "loop lag p99",
            "loop lag max",
            "longest single callback",
        ],
    )
    longest: list[str] = []
    for label, result in (
        (
            f"{TASKS} x {CONVERSATIONS_PER_TASK} conversations (graph.ainvoke, {CALLS} calls "
            "each), guard's adecide timed",
            graph_load,
        ),
        (f"{TASKS} tasks x {DECISIONS_PER_TASK} awaited adecide", raw_load),
        (
            f"{POOL} tasks (the pool's size) x {TASKS * DECISIONS_PER_TASK // POOL} awaited "
            "adecide",
            pool_load,
        ),
    ):
        lat, lags, watch = result["latencies"], result["lags"], result["watch"]
        longest.append(
            f"{ms(watch.longest)} in `{watch.longest_what}` (longest GC pause "
            f"{ms(watch.gc_longest)})"
        )
        load.add(
            label,
            f"{len(lat):,}",
            f"{result['wall']:.2f} s",
            f"{len(lat) / result['wall']:,.0f}",
            ms(percentile(lat, 50)),
            ms(percentile(lat, 99)),
            ms(max(lat)),
            ms(percentile(lags, 99)),
            ms(max(lags)),
            ms(watch.longest),
        )
    load.add(
        "idle loop (ticker alone, 1 s)",
        "",
        "",
        "",
        "",
        "",
        "",
        ms(percentile(idle, 99)),
        ms(max(idle)),
        "",
    )
    load.note(
        "decision latency is measured around each `await adecide`, so it includes waiting "
        "for a pooled connection and for the event loop while the other tasks run; with "
        f"{TASKS} tasks and 32 connections most of it is queueing, not OPA"
    )
    load.note(
        "loop lag: a task sleeping 1 ms records how late it wakes; under a saturating load it "
        "is the time of one pass of the loop over every ready task (all on one thread), so it "
        "grows with the number of tasks without anything blocking. The longest single "
        "callback (every callback timed, as asyncio's debug mode does) is what a blocking "
        "call would show as: " + "; ".join(longest)
    )
    return [load, threads_table()]


if __name__ == "__main__":
    run()
