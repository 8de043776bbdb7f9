"""Load: 1,000 decisions per second against one OPA for 60 seconds, from async conversations.

Open-loop: each of the conversations sends its k-th decision at a fixed time, whatever the
latency of the ones before, so a slow OPA shows up as latency and lag, not as a lower rate
that hides it. Reports errors (goal 0), denials that should have been allows (goal 0), the
rate reached and latency percentiles.

``python benchmarks/bench_load.py [seconds] [rate]``
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from common import Table, ms, percentile, start_opa

from langchain_opa_guard import OPAServer
from langchain_opa_guard.demo import load_scenarios


def documents() -> list[tuple[dict[str, Any], str]]:
    out = []
    for scenario in load_scenarios():
        call = {
            "name": scenario.tool,
            "args": scenario.args,
            "call_id": "load",
            "metadata": {"toolkit": "CustomerDBTool"},
        }
        document = {
            "version": 1,
            "tool": call,
            "user": scenario.user,
            "context": {"thread_id": "load", "node": "guard", "step": 2},
            "turn": [call],
            "history": [],
        }
        out.append((document, scenario.expect))
    return out


async def load(url: str, seconds: float, rate: float, workers: int) -> dict[str, Any]:
    client = OPAServer(url, timeout=2.0)
    corpus = documents()
    latencies: list[float] = []
    errors = 0
    wrong_denials = 0
    wrong_allows = 0
    sent = 0
    per_worker = rate / workers
    start = time.perf_counter() + 0.2

    async def conversation(index: int) -> None:
        nonlocal errors, wrong_denials, wrong_allows, sent
        k = 0
        offset = index / rate  # spread the workers' schedules
        while True:
            due = start + offset + k / per_worker
            if due - start >= seconds:
                return
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            document, expect = corpus[(index + k) % len(corpus)]
            began = time.perf_counter()
            decision = await client.adecide(document)
            latencies.append(time.perf_counter() - began)
            sent += 1
            if decision.error is not None:
                errors += 1
            elif expect == "allow" and not decision.allow:
                wrong_denials += 1
            elif expect == "deny" and decision.allow:
                wrong_allows += 1
            k += 1

    await asyncio.gather(*(conversation(i) for i in range(workers)))
    elapsed = time.perf_counter() - start  # from the first scheduled send
    await client.aclose()
    return {
        "sent": sent,
        "elapsed": elapsed,
        "rate": sent / elapsed,
        "errors": errors,
        "wrong_denials": wrong_denials,
        "wrong_allows": wrong_allows,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
    }


def run(seconds: float = 60.0, rate: float = 1000.0, workers: int = 100) -> list[Table]:
    opa = start_opa()
    try:
        result = asyncio.run(load(opa.url, seconds, rate, workers))
    finally:
        opa.stop()
    table = Table(
        f"Load: {rate:,.0f} decisions/s for {seconds:.0f} s from {workers} async conversations "
        "against one OPA (loopback)",
        [
            "decisions",
            "rate reached",
            "errors",
            "denials that should be allows",
            "allows that should be denials",
            "p50",
            "p99",
            "max",
        ],
    )
    table.add(
        f"{result['sent']:,}",
        f"{result['rate']:,.0f}/s",
        result["errors"],
        result["wrong_denials"],
        result["wrong_allows"],
        ms(result["p50"]),
        ms(result["p99"]),
        ms(result["max"]),
    )
    return [table]


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:3]]
    run(*args)
