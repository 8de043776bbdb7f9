"""Run the benchmarks in order and write ``benchmarks/RESULTS.md``.

``make bench`` runs this. A benchmark that fails is reported (in the output and in
RESULTS.md) and the others still run; the exit status is 1 when any failed.
"""

from __future__ import annotations

import datetime
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

BENCHMARKS = [
    ("0. Engines per decision: wasm, regopy, opa bench", "bench_engines"),
    ("1. Guard overhead per ReAct round", "bench_overhead"),
    ("2. OPAServer client vs the wire", "bench_client"),
    ("3. One turn of N calls decided together", "bench_batch"),
    ("4. Tracing overhead", "bench_tracing"),
    ("5. Concurrency", "bench_concurrency"),
    ("6. Memory over 10,000 runs", "bench_memory"),
    ("7. Load: 1,000 decisions per second for 60 seconds", "bench_load"),
    ("8. MCP tools: where to decide", "bench_mcp"),
    ("9. Guard overhead per ReAct round, in instructions", "bench_instructions"),
]


def main() -> int:
    started = time.perf_counter()
    now = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    sections: list[str] = []
    failures: list[str] = []
    timings: list[tuple[str, float]] = []
    for title, module_name in BENCHMARKS:
        print(f"\n# {title} ({module_name})", flush=True)
        load_at_start = os.getloadavg()[0]
        begin = time.perf_counter()
        try:
            module = importlib.import_module(module_name)
            tables = module.run()
            body = "\n".join(t.markdown() for t in tables)
        except Exception:  # noqa: BLE001 - report it and go on with the next benchmark
            error = traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
            failures.append(module_name)
            body = f"**FAILED**\n\n```text\n{error.strip()[-3000:]}\n```\n"
        spent = time.perf_counter() - begin
        timings.append((module_name, spent))
        sections.append(
            f"## {title}\n\n_{module_name}.py, {spent:.0f} s; load average (1 min) "
            f"{load_at_start:.2f} at its start, {os.getloadavg()[0]:.2f} at its end_\n\n{body}"
        )
    total = time.perf_counter() - started
    load_after = os.getloadavg()
    header = [
        "# Benchmark results",
        "",
        f"- date: {now:%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in load_after)}",
        f"- total run time: {total:.0f} s ("
        + ", ".join(f"{name} {spent:.0f} s" for name, spent in timings)
        + ")",
        "- method: every comparison runs its sides in one process (benchmark 4 also one "
        "process per side), interleaved round by round; figures are medians over rounds. "
        "OPA is a real `opa run --server` on loopback with decision logs on, on the same "
        "machine as the client.",
    ]
    if failures:
        header.append(f"- FAILED: {', '.join(failures)}")
    text = "\n".join(header) + "\n\n" + "\n".join(sections)
    (HERE / "RESULTS.md").write_text(text)
    print(f"\nwrote {HERE / 'RESULTS.md'}")
    print(f"total time: {total:.0f} s" + (f"; failed: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
