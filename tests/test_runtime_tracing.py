"""Decision spans under cancellation and across the guard's worker threads (in-memory SDK).

* A cancelled turn (a client gone, ``asyncio.wait_for`` expiring) ends every decision span
  it opened: status ERROR, ``error.type=cancelled``, and the decision metric counts it.
* Without ``OTelCallbackHandler``, the decisions of a turn are children of the span that
  was current when the graph ran, whatever thread or worker decided them, and the requests
  to OPA carry that trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fault_proxy import FaultProxy
from opentelemetry.trace import StatusCode
from test_guard_node import INTERNAL, mixed_turn_model
from test_load import READ
from test_tracing import Recorder

from langchain_opa_guard import (
    ErrorType,
    OPAServer,
    PolicyEngine,
    PolicyGuardNode,
    ToolCallGuard,
)
from langchain_opa_guard.demo import build_agent, customer_db_tools
from langchain_opa_guard.testing import tool_call
from langchain_opa_guard.tracing import attributes as A

GO = {"messages": [("user", "go")]}


@pytest.fixture
def proxy(opa_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(opa_url) as running:
        yield running


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.provider.shutdown()


def assert_cancelled(recorder: Recorder, count: int) -> None:
    spans = recorder.by_name("run_guardrail ")
    assert len(spans) == count, [s.name for s in spans]
    for span in spans:
        assert span.end_time is not None
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes[A.ERROR_TYPE] == ErrorType.CANCELLED
    counted = sum(
        point.value
        for point in recorder.metric_points("opa.guard.decisions")
        if point.attributes.get(A.ERROR_TYPE) == ErrorType.CANCELLED
    )
    assert counted == count
    timed = [
        point
        for point in recorder.metric_points("opa.guard.decision.duration")
        if point.attributes.get(A.ERROR_TYPE) == ErrorType.CANCELLED
    ]
    assert sum(point.count for point in timed) == count


@pytest.mark.parametrize("batch", [False, True])
def test_a_cancelled_turn_ends_its_decision_spans(
    proxy: FaultProxy, recorder: Recorder, batch: bool
) -> None:
    engine = OPAServer(proxy.url, batch=batch, timeout=5.0)
    proxy.set("delay", delay=3.0)
    tools, db = customer_db_tools()
    guard = PolicyGuardNode(
        engine, registry=tools, tracer_provider=recorder.provider, meter_provider=recorder.meters
    )
    graph = build_agent(engine, mixed_turn_model(), tools, guard=guard)

    async def cancel_midway() -> None:
        task = asyncio.create_task(graph.ainvoke(GO, context={"user": INTERNAL}))
        await asyncio.sleep(0.3)  # the three decisions are waiting on OPA
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    assert db.executed == []
    assert_cancelled(recorder, 3)
    engine.close()


def test_a_decision_cut_off_by_wait_for_ends_its_span(
    proxy: FaultProxy, recorder: Recorder
) -> None:
    engine = OPAServer(proxy.url, timeout=5.0)
    proxy.set("delay", delay=3.0)
    guard = ToolCallGuard(engine, tracer_provider=recorder.provider, meter_provider=recorder.meters)
    call = tool_call("get_customer_details", {"customer_id": "CUST-001"}, "c-1")

    async def give_up() -> None:
        with pytest.raises(asyncio.TimeoutError):  # TimeoutError itself from 3.11 on
            await asyncio.wait_for(guard.acheck(call, None, {}, {"user": INTERNAL}), 0.3)

    asyncio.run(give_up())
    assert_cancelled(recorder, 1)
    engine.close()


# -- trace context in worker threads ------------------------------------------------------


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_decisions_nest_under_the_callers_span_without_the_handler(
    engine: PolicyEngine, recorder: Recorder, mode: str
) -> None:
    """A sync turn's calls are decided on worker threads (OPA), an async turn's on the
    embedded engine off the loop: either way each decision is a child of the caller's span."""
    tools, _ = customer_db_tools()
    guard = PolicyGuardNode(
        engine, registry=tools, tracer_provider=recorder.provider, meter_provider=recorder.meters
    )
    graph = build_agent(engine, mixed_turn_model(), tools, guard=guard)
    tracer = recorder.provider.get_tracer("test")
    with tracer.start_as_current_span("handle request") as root:
        if mode == "invoke":
            graph.invoke(GO, context={"user": INTERNAL})
        else:

            async def run() -> Any:
                return await graph.ainvoke(GO, context={"user": INTERNAL})

            asyncio.run(run())
    decisions = recorder.by_name("run_guardrail ")
    assert len(decisions) == 3
    for span in decisions:
        assert span.context.trace_id == root.get_span_context().trace_id, span.name
        assert span.parent is not None
        assert span.parent.span_id == root.get_span_context().span_id


def test_a_turns_requests_to_opa_carry_the_callers_trace(
    proxy: FaultProxy, recorder: Recorder
) -> None:
    engine = OPAServer(proxy.url)
    document = READ
    before = len(proxy.requests)
    tracer = recorder.provider.get_tracer("test")
    with tracer.start_as_current_span("handle request") as root:
        assert all(d.allow for d in engine.decide_many([document] * 4))
    trace_id = format(root.get_span_context().trace_id, "032x")
    sent = [headers for _, _, headers, _ in proxy.requests[before:]]
    assert len(sent) == 4
    for headers in sent:
        parent = {k.lower(): v for k, v in headers.items()}.get("traceparent", "")
        assert parent.split("-")[1:2] == [trace_id], headers
    engine.close()


@pytest.mark.parametrize("batch", [False, True])
def test_a_turn_cancelled_while_fail_open_asks_for_health_runs_nothing(
    proxy: FaultProxy, recorder: Recorder, batch: bool
) -> None:
    """Every call is ``fail_open`` and OPA is hung: the decisions time out and the guard asks
    OPA's health check whether it is down before opening them. A client that gives up during
    that check runs no tool, and the decision spans end as cancelled."""
    engine = OPAServer(proxy.url, batch=batch, timeout=0.5)
    proxy.set("delay", delay=3.0, hold_health=True)
    tools, db = customer_db_tools()
    guard = PolicyGuardNode(
        engine,
        registry=tools,
        fail_open={t.name for t in tools},
        tracer_provider=recorder.provider,
        meter_provider=recorder.meters,
    )
    graph = build_agent(engine, mixed_turn_model(), tools, guard=guard)

    async def cancel_during_the_health_check() -> None:
        task = asyncio.create_task(graph.ainvoke(GO, context={"user": INTERNAL}))
        await asyncio.sleep(0.75)  # decisions timed out at 0.5 s; the check runs until ~1 s
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_during_the_health_check())
    assert db.executed == []
    assert_cancelled(recorder, 3)
    engine.close()
