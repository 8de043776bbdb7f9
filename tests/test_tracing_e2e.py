"""End to end: the agent's spans and OPA's own server spans in one trace, read back from Jaeger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import POLICIES
from jaeger_process import JaegerProcess
from opa_process import OPAProcess
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_guard_node import INTERNAL, mixed_turn_model

from langchain_opa_guard import OPAServer, OTelCallbackHandler, configure_tracing
from langchain_opa_guard.demo import build_agent, customer_db_tools


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JaegerProcess]:
    log = tmp_path_factory.mktemp("jaeger") / "jaeger.log"
    with JaegerProcess(log_path=log) as process:
        yield process


@pytest.fixture(scope="module")
def traced_opa(
    jaeger: JaegerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OPAProcess]:
    """A real OPA exporting its own spans to the same Jaeger, W3C trace context on."""
    log = tmp_path_factory.mktemp("opa-traced") / "opa.log"
    args = [
        "--set",
        "distributed_tracing.type=http",
        "--set",
        f"distributed_tracing.address=127.0.0.1:{jaeger.otlp_http_port}",
        "--set",
        "distributed_tracing.service_name=opa",
        "--set",
        "distributed_tracing.batch_span_processor_options.batch_timeout_ms=100",
    ]
    with OPAProcess([POLICIES], extra_args=args, log_path=log) as server:
        yield server


def attribute(span: dict[str, Any], key: str) -> Any:
    for item in span.get("attributes", []):
        if item["key"] == key:
            return next(iter(item["value"].values()))
    return None


def test_one_trace_holds_the_agent_and_opa(jaeger: JaegerProcess, traced_opa: OPAProcess) -> None:
    memory = InMemorySpanExporter()
    setup = configure_tracing(
        "agent-e2e",
        endpoint=jaeger.otlp_http_endpoint,
        span_processors=[SimpleSpanProcessor(memory)],
        metric_readers=[],
        set_global=False,
    )
    handler = OTelCallbackHandler(setup.tracer_provider, setup.meter_provider)
    tools, db = customer_db_tools()
    graph = build_agent(OPAServer(traced_opa.url), mixed_turn_model(), tools)
    graph.invoke(
        {"messages": [("user", "go")]},
        {"callbacks": [handler], "configurable": {"thread_id": "e2e"}},
        context={"user": INTERNAL},
    )
    setup.force_flush()
    setup.shutdown()
    assert [name for name, _ in db.executed] == ["get_customer_details"]
    ours = memory.get_finished_spans()
    trace_id = f"{ours[0].context.trace_id:032x}"
    decision_ids = {f"{s.context.span_id:016x}" for s in ours if s.name.startswith("run_guardrail")}
    assert len(decision_ids) == 3

    # OPA exports in batches: wait until its three server spans have arrived too.
    trace = jaeger.wait_for_trace(trace_id, min_spans=len(ours) + 3, timeout=20)
    spans = JaegerProcess.spans(trace)
    services = {
        next(iter(a["value"].values()))
        for rs in trace["resourceSpans"]
        for a in rs["resource"].get("attributes", [])
        if a["key"] == "service.name"
    }
    assert {"agent-e2e", "opa"} <= services
    names = [s["name"] for s in spans]
    assert "invoke_agent LangGraph" in names and "guard" in names
    assert names.count("execute_tool get_customer_details") == 1
    opa_spans = [s for s in spans if s.get("parentSpanId") in decision_ids]
    assert len(opa_spans) == 3, names  # one OPA server span under each decision span
    assert all(s["kind"] == 2 for s in opa_spans)  # SERVER
    assert {s["traceId"] for s in spans} == {trace_id}
    decided = [s for s in spans if s["name"].startswith("run_guardrail")]
    assert sorted(attribute(s, "opa.decision.allow") for s in decided) == [False, False, True]
    assert all(attribute(s, "opa.decision_id") for s in decided)

    # OPA's decision log carries our trace id for each decision.
    log_lines = Path(traced_opa.log_path).read_text().splitlines()  # type: ignore[arg-type]
    logged = [json.loads(line) for line in log_lines if '"decision_id"' in line]
    ours_logged = [e for e in logged if e.get("trace_id") == trace_id]
    assert len(ours_logged) == 3
    assert {e["span_id"] for e in ours_logged} <= {s["spanId"] for s in opa_spans} | decision_ids


def test_configure_tracing_honours_the_otel_env(
    jaeger: JaegerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http_endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "env-named-service")
    memory = InMemorySpanExporter()
    setup = configure_tracing(
        span_processors=[SimpleSpanProcessor(memory)], metric_readers=[], set_global=False
    )
    with setup.tracer_provider.get_tracer("e2e").start_as_current_span("from-env"):
        pass
    setup.force_flush()
    setup.shutdown()
    trace_id = f"{memory.get_finished_spans()[0].context.trace_id:032x}"
    trace = jaeger.wait_for_trace(trace_id, min_spans=1, timeout=10)
    assert [s["name"] for s in JaegerProcess.spans(trace)] == ["from-env"]
    assert "env-named-service" in jaeger.services()


def test_the_demo_exports_over_otlp_when_asked(jaeger: JaegerProcess) -> None:
    """``make demo`` prints the span trees, and sends them when the OTLP endpoint is set."""
    import os
    import subprocess
    import sys

    from conftest import POLICIES

    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint}
    done = subprocess.run(
        [sys.executable, "-m", "langchain_opa_guard.demo", "--policies", str(POLICIES)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert "5/5 scenarios behaved as expected" in done.stdout
    assert "run_guardrail delete_customer" in done.stdout  # the printed tree
    import time

    deadline = time.monotonic() + 15
    while "langchain-opa-guard-demo" not in jaeger.services() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "langchain-opa-guard-demo" in jaeger.services()
