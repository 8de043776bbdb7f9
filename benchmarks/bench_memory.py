"""Benchmark 6: does memory grow over 10,000 guarded, traced runs?

The demo's guarded agent on the embedded engine, one allowed call per run, every run with
``OTelCallbackHandler`` (local SDK ``TracerProvider``, ``BatchSpanProcessor`` to an exporter
that counts and drops spans), each run on its own thread id. After a warm-up of 500 runs the
resident set size (``/proc/self/statm``) is sampled every 500 runs, after a
``gc.collect()``; the slope is a least-squares line through the samples. The runs happen
in a fresh Python process, so the RSS is this workload's alone (in a process that ran other
benchmarks first, freed memory from them would absorb any growth).
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import POLICIES, ROOT
from harness import (
    ADMIN,
    INPUTS,
    NotedTable,
    admin_model,
    batch_provider,
    check_answered,
    rss_bytes,
)

from langchain_opa_guard import EmbeddedPolicy, OTelCallbackHandler
from langchain_opa_guard.demo import build_agent, customer_db_tools

RUNS = 10_000
WARMUP = 500
EVERY = 500


def worker() -> dict[str, Any]:
    """The 10,000 runs, in this process; the samples and counts as a dict."""
    provider, exporter = batch_provider()
    handler = OTelCallbackHandler(provider)
    tools, db = customer_db_tools()
    engine = EmbeddedPolicy(POLICIES)
    graph = build_agent(engine, admin_model(1), tools)
    context = {"user": ADMIN}

    def one(i: int) -> None:
        config = {"callbacks": [handler], "configurable": {"thread_id": f"mem-{i}"}}
        graph.invoke(INPUTS, config, context=context)
        # The demo's table records every call that ran (for the tests), ~0.5 KiB a run:
        # the fixture's memory, not the guard's or the tracer's.
        db.executed.clear()

    check_answered(graph.invoke(INPUTS, {"callbacks": [handler]}, context=context), 1)
    start = time.perf_counter()
    for i in range(WARMUP):
        one(i)
    warmup_time = time.perf_counter() - start

    samples: list[tuple[int, int]] = []
    gc.collect()
    samples.append((0, rss_bytes()))
    start = time.perf_counter()
    for i in range(1, RUNS + 1):
        one(WARMUP + i)
        if i % EVERY == 0:
            gc.collect()
            samples.append((i, rss_bytes()))
    elapsed = time.perf_counter() - start
    provider.force_flush()
    exported = exporter.exported
    open_runs = handler.open_runs
    provider.shutdown()
    engine.close()
    return {
        "samples": samples,
        "elapsed": elapsed,
        "warmup_time": warmup_time,
        "exported": exported,
        "open_runs": open_runs,
    }


def run() -> list[NotedTable]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the memory worker failed:\n{out.stderr[-3000:]}")
    reply = json.loads(out.stdout.strip().splitlines()[-1])
    samples = [(int(x), int(y)) for x, y in reply["samples"]]
    elapsed, warmup_time = reply["elapsed"], reply["warmup_time"]
    exported, open_runs = reply["exported"], reply["open_runs"]

    xs = [x for x, _ in samples]
    ys = [y / 1024 for _, y in samples]
    slope, _intercept = statistics.linear_regression(xs, ys)
    half = len(xs) // 2
    late_slope, _ = statistics.linear_regression(xs[half:], ys[half:])
    table = NotedTable(
        f"Memory over {RUNS:,} guarded, traced runs (fresh process, embedded engine, 1 call "
        "per run, "
        f"OTelCallbackHandler + BatchSpanProcessor to a dropping exporter; RSS after "
        f"gc.collect() every {EVERY} runs, after {WARMUP} warm-up runs)",
        [
            "RSS at start",
            "RSS at end",
            "min .. max",
            "slope (least squares)",
            f"slope, last {RUNS - xs[half]:,} runs",
            "time",
            "spans exported",
            "open runs left",
        ],
    )
    table.add(
        f"{ys[0] / 1024:,.1f} MiB",
        f"{ys[-1] / 1024:,.1f} MiB",
        f"{min(ys) / 1024:,.1f} .. {max(ys) / 1024:,.1f} MiB",
        f"{slope * 1000:+,.1f} KiB per 1,000 runs",
        f"{late_slope * 1000:+,.1f} KiB per 1,000 runs",
        f"{elapsed:.1f} s ({elapsed / RUNS * 1e3:.2f} ms per run; warm-up {warmup_time:.1f} s)",
        f"{exported:,}",
        open_runs,
    )
    table.note(
        "the demo's CustomerDB records every call that ran in `db.executed` (~0.5 KiB per "
        "run, by design, for the tests); it is cleared after each run so the figure is the "
        "guard's and the tracer's"
    )
    table.note(
        "RSS samples (runs: MiB): "
        + ", ".join(
            f"{x // 1000 if x % 1000 == 0 else x / 1000:g}k: {y / 1024:.1f}"
            for x, y in zip(xs, ys, strict=True)
        )
    )
    return [table]


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        print(json.dumps(worker()))
    else:
        run()
