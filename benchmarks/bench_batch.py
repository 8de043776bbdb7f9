"""Benchmark 3: one turn of N calls decided together, N = 1, 3, 8, 32.

The N input documents are built with the guard's own contract functions
(``call_document``, ``where_document``, ``policy_input``), so they have the guard's shape
and size (each carries the whole turn, so a document grows with N). Timed: the engine's
``decide_many(docs)`` (OPA: a thread pool over kept-alive connections), ``await
adecide_many(docs)`` (OPA: ``asyncio.gather`` over the async pool, on one persistent event
loop) and, for comparison, the embedded engine's ``decide_many`` (in order, in process).
The guard itself does the same: ``decide`` per call over its own thread pool on the sync
path, ``asyncio.gather`` of ``adecide`` on the async path.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from common import POLICIES, start_opa, us
from harness import (
    NotedTable,
    median,
    process_cpu_seconds,
    ratio,
    timed_rounds,
    turn_documents,
)

from langchain_opa_guard import EmbeddedPolicy, OPAServer

COUNTS = (1, 3, 8, 32)
ALLOW_ALL = 'package agent.authz\n\ndecision := {"allow": true, "reasons": []}\n'
ROUNDS = 15
BLOCK = {1: 30, 3: 15, 8: 8, 32: 2}  # turns per timed block
# In process a turn takes tens of microseconds: blocks of about 20 ms, so that one
# scheduling hiccup does not decide a median.
IN_PROCESS_BLOCK = {1: 400, 3: 200, 8: 100, 32: 30}


def run() -> list[NotedTable]:
    opa = start_opa()
    server = OPAServer(opa.url)
    batched = OPAServer(opa.url, batch=True)
    embedded = EmbeddedPolicy(POLICIES)
    # The floor: the same turns on a policy that allows everything, so what is left is
    # encoding the turn, parsing it in the module and one `with` per call.
    floor_dir = tempfile.TemporaryDirectory()
    (Path(floor_dir.name) / "allow.rego").write_text(ALLOW_ALL)
    floor = EmbeddedPolicy(floor_dir.name, backend="wasm")
    loop = asyncio.new_event_loop()
    try:
        assert opa.process is not None
        opa_pid = opa.process.pid
        results: dict[int, dict[str, float]] = {}
        cpu_results: dict[int, dict[str, float]] = {}
        opa_cpu: dict[int, dict[str, float]] = {}
        for n in COUNTS:
            docs = turn_documents(n)
            k = BLOCK[n]

            def sync_many(docs: list[dict[str, Any]] = docs, k: int = k) -> int:
                for _ in range(k):
                    server.decide_many(docs)
                return k

            async def amany(docs: list[dict[str, Any]] = docs, k: int = k) -> int:
                for _ in range(k):
                    await server.adecide_many(docs)
                return k

            def async_many(amany: Any = amany) -> int:
                return int(loop.run_until_complete(amany()))

            def batch_many(docs: list[dict[str, Any]] = docs, k: int = k) -> int:
                for _ in range(k):
                    batched.decide_many(docs)
                return k

            k_in = IN_PROCESS_BLOCK[n]

            def embedded_many(docs: list[dict[str, Any]] = docs, k: int = k_in) -> int:
                for _ in range(k):
                    embedded.decide_many(docs)
                return k

            def floor_many(docs: list[dict[str, Any]] = docs, k: int = k_in) -> int:
                for _ in range(k):
                    floor.decide_many(docs)
                return k

            for decisions in (
                server.decide_many(docs),
                loop.run_until_complete(server.adecide_many(docs)),
                batched.decide_many(docs),
                embedded.decide_many(docs),
                floor.decide_many(docs),
            ):
                if len(decisions) != n or not all(d.allow for d in decisions):
                    raise RuntimeError(f"unexpected decisions: {decisions}")
            opa_totals: dict[str, list[float]] = {}

            def with_opa_cpu(
                name: str, fn: Any, totals: dict[str, list[float]] = opa_totals
            ) -> Any:
                def side() -> int:
                    before = process_cpu_seconds(opa_pid)
                    count = int(fn())
                    spent = process_cpu_seconds(opa_pid) - before
                    total = totals.setdefault(name, [0.0, 0])
                    total[0] += spent
                    total[1] += count
                    return count

                return side

            cpu: dict[str, list[float]] = {}
            samples = timed_rounds(
                {
                    "sync": with_opa_cpu("sync", sync_many),
                    "async": with_opa_cpu("async", async_many),
                    "batch": with_opa_cpu("batch", batch_many),
                    "embedded": embedded_many,
                    "floor": floor_many,
                },
                rounds=ROUNDS,
                warmup=2,
                cpu=cpu,
            )
            results[n] = {name: median(values) for name, values in samples.items()}
            cpu_results[n] = {name: median(values) for name, values in cpu.items()}
            opa_cpu[n] = {name: spent / count for name, (spent, count) in opa_totals.items()}

        table = NotedTable(
            "One turn of N calls decided together (seconds per turn; medians of "
            f"{ROUNDS} interleaved rounds)",
            [
                "calls",
                "OPA decide_many",
                "vs 1 call",
                "OPA adecide_many",
                "vs 1 call",
                "OPA batch=True (one request)",
                "vs 1 call",
                "embedded decide_many",
                "vs 1 call",
                "embedded, allow-all policy",
                "vs 1 call",
                "input size",
            ],
        )
        one = results[1]
        for n in COUNTS:
            r = results[n]
            size = len(json.dumps({"input": turn_documents(n)[0]}))
            table.add(
                n,
                us(r["sync"]),
                ratio(r["sync"], one["sync"]),
                us(r["async"]),
                ratio(r["async"], one["async"]),
                us(r["batch"]),
                ratio(r["batch"], one["batch"]),
                us(r["embedded"]),
                ratio(r["embedded"], one["embedded"]),
                us(r["floor"]),
                ratio(r["floor"], one["floor"]),
                f"{size:,} B",
            )
        for key, label in (
            ("sync", "decide_many"),
            ("async", "adecide_many"),
            ("batch", "batch=True decide_many"),
        ):
            got = results[8][key] / one[key]
            verdict = "met" if got <= 2.0 else "NOT met"
            table.note(f"goal, OPA {label}: 8 calls <= 2x one call: {got:.2f}x ({verdict})")
        got = results[8]["embedded"] / one["embedded"]
        floor_ratio = results[8]["floor"] / one["floor"]
        table.note(
            f"goal, embedded decide_many (one guest call per turn): 8 calls <= 2.5x one call: "
            f"{got:.2f}x ({'met' if got <= 2.5 else 'NOT met'}); on a policy that allows "
            f"everything the same turns take {floor_ratio:.2f}x: encoding the turn, the "
            "module parsing it and one `with` per call, before any rule runs"
        )
        table.note(
            "each input carries the whole turn (`input.turn`), so one input grows with N "
            "(input size: one encoded request body); the embedded engine decides the turn in "
            "one guest call, the calls given by their position in `input.turn`, evaluating "
            "the decision once per call inside it"
        )
        table.note(
            "async: each block is one `loop.run_until_complete` over several turns on a "
            "persistent loop; OPA's server shares the machine's 2 cores with the client"
        )
        where = NotedTable(
            "Where a turn's time goes (CPU seconds per turn: this Python process, all "
            "threads, median per round; OPA's process, total over all rounds / turns)",
            [
                "calls",
                "decide_many wall",
                "client CPU",
                "OPA CPU",
                "adecide_many wall",
                "client CPU",
                "OPA CPU",
                "embedded CPU",
            ],
        )
        for n in COUNTS:
            r, c, o = results[n], cpu_results[n], opa_cpu[n]
            where.add(
                n,
                us(r["sync"]),
                us(c["sync"]),
                us(o["sync"]),
                us(r["async"]),
                us(c["async"]),
                us(o["async"]),
                us(c["embedded"]),
            )
        where.note(
            "on loopback there is no network wait for concurrency to hide: a turn costs about "
            "N times the client's CPU per request (one core, the GIL) plus OPA's CPU on the "
            "other core; OPA CPU is read from /proc at 10 ms resolution, hence totals"
        )
        return [table, where]
    finally:
        loop.run_until_complete(server.aclose())
        loop.close()
        server.close()
        embedded.close()
        floor.close()
        floor_dir.cleanup()
        opa.stop()


if __name__ == "__main__":
    run()
