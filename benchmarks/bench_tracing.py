"""Benchmark 4: what tracing adds to a guarded run, ours against two LangChain instrumentors.

The graph: the demo's guarded agent on the embedded engine, one ReAct round with 3 allowed
calls, ``graph.invoke``. Sides:

* ``none``: no callbacks, no instrumentor;
* ``ours``: ``OTelCallbackHandler(tracer_provider)`` in the run's callbacks (content off,
  the default);
* ``ours, content on``: the same with ``capture_content=True``;
* ``openinference``: openinference-instrumentation-langchain, ``LangChainInstrumentor()``
  (records inputs and outputs by default);
* ``traceloop``: opentelemetry-instrumentation-langchain, ``LangchainInstrumentor()``
  (its defaults).

Every traced side gets its own local SDK ``TracerProvider`` with a ``BatchSpanProcessor`` to
an exporter that counts and drops spans: span creation and queueing are measured, export is
not (it happens on the processor's thread and costs nothing). Metrics go to the global
no-op MeterProvider on every side.

The instrumentors patch LangChain globally. openinference's ``uninstrument()`` restores
LangChain (checked: no spans after it), but Traceloop's does not: its callback handler keeps
being added after ``uninstrument()``, and instrumenting again stacks a second one. So:

1. in one process, ``none``, ``ours``, ``ours, content on`` and ``openinference``,
   interleaved round by round, openinference instrumented around each of its blocks only;
2. every side in its own fresh process, sides alternating, several processes per side;
   each process warms up, then times rounds of runs and reports its median round; the figure
   is the median over that side's processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import POLICIES, ROOT, ms
from harness import (
    ADMIN,
    INPUTS,
    NotedTable,
    admin_model,
    batch_provider,
    check_answered,
    median,
    ratio,
    timed_rounds,
)

CALLS = 3
ROUNDS = 20  # in-process rounds
BLOCK = 8  # runs per timed block
PROCESSES = 4  # processes per side (subprocess method)
PROCESS_ROUNDS = 12
SIDES = ("none", "ours", "ours, content on", "openinference", "traceloop")
GOAL = 1.30


def _graph() -> Any:
    from langchain_opa_guard import EmbeddedPolicy
    from langchain_opa_guard.demo import build_agent, customer_db_tools

    tools, _ = customer_db_tools()
    return build_agent(EmbeddedPolicy(POLICIES), admin_model(CALLS), tools)


def _block(graph: Any, config: dict[str, Any]) -> Any:
    context = {"user": ADMIN}

    def block() -> int:
        for _ in range(BLOCK):
            graph.invoke(INPUTS, config, context=context)
        return BLOCK

    return block


def _side(name: str) -> tuple[dict[str, Any], Any, Any, Any]:
    """(config, instrumentor or None, provider, exporter) for one side."""
    from langchain_opa_guard import OTelCallbackHandler

    if name == "none":
        return {}, None, None, None
    provider, exporter = batch_provider()
    if name == "ours":
        return {"callbacks": [OTelCallbackHandler(provider)]}, None, provider, exporter
    if name == "ours, content on":
        handler = OTelCallbackHandler(provider, capture_content=True)
        return {"callbacks": [handler]}, None, provider, exporter
    if name == "openinference":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        return {}, LangChainInstrumentor(), provider, exporter
    if name == "traceloop":
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        return {}, LangchainInstrumentor(), provider, exporter
    raise ValueError(name)


def _spans_per_run(graph: Any, config: dict[str, Any], provider: Any, exporter: Any) -> float:
    if provider is None:
        return 0.0
    provider.force_flush()
    before = exporter.exported
    for _ in range(4):
        graph.invoke(INPUTS, config, context={"user": ADMIN})
    provider.force_flush()
    return (exporter.exported - before) / 4


def in_process() -> NotedTable:
    graph = _graph()
    names = ("none", "ours", "ours, content on", "openinference")
    sides = {name: _side(name) for name in names}
    for config, instrumentor, provider, _e in sides.values():
        if instrumentor is not None:
            instrumentor.instrument(tracer_provider=provider)
        check_answered(graph.invoke(INPUTS, config, context={"user": ADMIN}), CALLS)
        if instrumentor is not None:
            instrumentor.uninstrument()
    spans = {}
    for name, (config, instrumentor, provider, exporter) in sides.items():
        if instrumentor is not None:
            instrumentor.instrument(tracer_provider=provider)
        spans[name] = _spans_per_run(graph, config, provider, exporter)
        if instrumentor is not None:
            instrumentor.uninstrument()
    _config, oi, oi_provider, oi_exporter = sides["openinference"]
    samples = timed_rounds(
        {name: _block(graph, config) for name, (config, *_rest) in sides.items()},
        rounds=ROUNDS,
        setup={"openinference": lambda: oi.instrument(tracer_provider=oi_provider)},
        teardown={"openinference": oi.uninstrument},
    )
    leaked = _spans_per_run(graph, {}, oi_provider, oi_exporter)
    if leaked:
        raise RuntimeError(f"openinference still traced after uninstrument ({leaked} spans)")
    table = NotedTable(
        f"Tracing overhead, one process (guarded graph, embedded engine, {CALLS} calls; "
        f"medians of {ROUNDS} interleaved rounds x {BLOCK} runs; openinference instrumented "
        "around its own blocks only)",
        ["tracing", "median per run", "vs no tracing", "spans per run"],
    )
    base = median(samples["none"])
    for name in names:
        value = median(samples[name])
        table.add(name, ms(value), ratio(value, base), f"{spans[name]:g}")
    for _c, _i, provider, _e in sides.values():
        if provider is not None:
            provider.shutdown()
    return table


def worker(name: str) -> dict[str, Any]:
    """One side, alone in this process: median seconds per run over ``PROCESS_ROUNDS``."""
    graph = _graph()
    config, instrumentor, provider, exporter = _side(name)
    if instrumentor is not None:
        instrumentor.instrument(tracer_provider=provider)
    check_answered(graph.invoke(INPUTS, config, context={"user": ADMIN}), CALLS)
    spans = _spans_per_run(graph, config, provider, exporter)
    samples = timed_rounds({name: _block(graph, config)}, rounds=PROCESS_ROUNDS, warmup=2)
    if provider is not None:
        provider.shutdown()
    return {"side": name, "median": median(samples[name]), "spans": spans}


def subprocesses() -> NotedTable:
    results: dict[str, list[float]] = {name: [] for name in SIDES}
    spans: dict[str, float] = {}
    for rep in range(PROCESSES):
        order = SIDES if rep % 2 == 0 else tuple(reversed(SIDES))
        for name in order:
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--worker", name],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            if out.returncode != 0:
                raise RuntimeError(f"worker {name!r} failed:\n{out.stderr[-2000:]}")
            reply = json.loads(out.stdout.strip().splitlines()[-1])
            results[name].append(reply["median"])
            spans[name] = reply["spans"]
    table = NotedTable(
        f"Tracing overhead, one fresh process per side (guarded graph, embedded engine, "
        f"{CALLS} calls; {PROCESSES} processes per side, sides alternating; each process: "
        f"median of {PROCESS_ROUNDS} rounds x {BLOCK} runs; figure: median over processes)",
        ["tracing", "median per run", "vs no tracing", "spread over processes", "spans per run"],
    )
    base = median(results["none"])
    for name in SIDES:
        values = results[name]
        spread = f"{ms(min(values))} .. {ms(max(values))}"
        table.add(name, ms(median(values)), ratio(median(values), base), spread, f"{spans[name]:g}")
    ours = median(results["ours"]) / base
    others = {n: median(results[n]) / base for n in ("openinference", "traceloop")}
    below = all(ours < v for v in others.values())
    verdict = "met" if ours <= GOAL and below else "NOT met"
    table.note(
        f"goal: ours <= {GOAL:.2f}x and below both instrumentors: ours {ours:.2f}x, "
        + ", ".join(f"{n} {v:.2f}x" for n, v in others.items())
        + f" ({verdict})"
    )
    return table


def run() -> list[NotedTable]:
    first = in_process()
    first.note(
        "exporters: local SDK TracerProvider + BatchSpanProcessor to an exporter that drops "
        "spans, one provider per side; export cost is not measured, span creation and queueing "
        "are"
    )
    second = subprocesses()
    second.note(
        "why processes: Traceloop's LangchainInstrumentor.uninstrument() does not remove its "
        "callback handler (spans keep coming), and instrumenting again stacks another, so it "
        "cannot be interleaved in one process"
    )
    return [first, second]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2])))
    else:
        run()
