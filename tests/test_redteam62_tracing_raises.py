"""Red team 62: a tracing back end that raises crashes the guarded graph with its raw error.

What was done: a real graph in each of the four wirings (``tests/mediation_kit.py``,
``tests/policies`` embedded), traced as the README shows (``OTelCallbackHandler`` among the
run's callbacks) with an OpenTelemetry ``SpanProcessor`` whose ``on_end`` raises (a broken
exporter bridge, a processor with a bug). The model proposes one turn of two allowed
``read`` calls; the processor raises only when the decision span of the second call ends.

Observed: ``invoke`` raises the processor's ``RuntimeError`` in every wiring (the guard
starts and ends its decision spans with no protection, while LangChain swallows the same
error in the handler's own callbacks: without the guard the run would finish). In the
interceptor wiring the first call has already run when the graph crashes; in the edge
wiring the turn is left with no answers at all.

Expected (README, "Failure behaviour": "No exception escapes into the graph"): tracing is
observation only; a span that cannot be recorded must not end the run. The run finishes,
each call gets exactly one answer and each allowed call runs once.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from mediation_kit import (
    USER,
    WIRINGS,
    Ledger,
    Script,
    mediation_engine,
    mediation_tools,
    wired_graph,
)
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from langchain_opa_guard import OTelCallbackHandler
from langchain_opa_guard.testing import tool_call

engine = mediation_engine


class RaisesOnSecondDecision(SpanProcessor):
    """Raises when the decision span of call ``c2`` ends."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: Any) -> None:
        attributes = span.attributes or {}
        if span.name.startswith("run_guardrail") and attributes.get("gen_ai.tool.call.id") == "c2":
            raise RuntimeError("span processor failed")


@pytest.mark.parametrize("kind", WIRINGS)
def test_a_raising_span_processor_does_not_crash_the_graph(engine: Any, kind: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(RaisesOnSecondDecision())
    ledger = Ledger()
    turn = AIMessage(
        "",
        id="a1",
        tool_calls=[
            tool_call("read", {"item": "i"}, "c1"),
            tool_call("read", {"item": "j"}, "c2"),
        ],
    )
    graph = wired_graph(engine, kind, mediation_tools(ledger), Script([turn]))
    config = {
        "configurable": {"thread_id": str(uuid.uuid4())},
        "callbacks": [OTelCallbackHandler(provider)],
    }
    try:
        result = graph.invoke({"messages": [("user", "hi")]}, config, context={"user": USER})
    except Exception as exc:  # noqa: BLE001 - the finding
        pytest.fail(
            f"{kind}: the graph crashed with the tracer's raw {type(exc).__name__}({exc}); "
            f"tools that ran before the crash: {[r[1] for r in ledger.runs]}"
        )
    answers = [m.tool_call_id for m in result["messages"] if isinstance(m, ToolMessage)]
    assert sorted(answers) == ["c1", "c2"]
    assert sorted(r[1] for r in ledger.runs) == ["c1", "c2"]


class RaisesAlways(SpanProcessor):
    """Raises on every span's start (``where="start"``) or end (``where="end"``)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "start":
            raise RuntimeError("span processor failed at start")

    def on_end(self, span: Any) -> None:
        if self.where == "end":
            raise RuntimeError("span processor failed at end")


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("where", ["start", "end"])
@pytest.mark.parametrize("kind", WIRINGS)
def test_a_tracer_failing_on_every_span_leaves_the_decisions_and_says_so_once(
    engine: Any, kind: str, where: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every span fails (the guard's decision spans and the handler's own): the allowed call
    runs once, the denied one never, each gets one answer, and the failure is one warning."""
    import asyncio
    import logging

    from langchain_opa_guard.tracing import decision_spans

    decision_spans._warned = False
    provider = TracerProvider()
    provider.add_span_processor(RaisesAlways(where))
    ledger = Ledger()
    turn = AIMessage(
        "",
        id="a1",
        tool_calls=[
            tool_call("read", {"item": "i"}, "c1"),
            tool_call("pay", {"amount": 5000}, "p1"),
        ],
    )
    graph = wired_graph(engine, kind, mediation_tools(ledger), Script([turn]))
    config = {
        "configurable": {"thread_id": str(uuid.uuid4())},
        "callbacks": [OTelCallbackHandler(provider)],
    }
    inputs = {"messages": [("user", "hi")]}
    with caplog.at_level(logging.DEBUG, logger="langchain_opa_guard.tracing.decision_spans"):
        if mode == "sync":
            result = graph.invoke(inputs, config, context={"user": USER})
        else:
            result = asyncio.run(graph.ainvoke(inputs, config, context={"user": USER}))
    answers = [m.tool_call_id for m in result["messages"] if isinstance(m, ToolMessage)]
    assert sorted(answers) == ["c1", "p1"]
    assert [r[1] for r in ledger.runs] == ["c1"]
    # (LangChain logs the handler's own failures itself, a warning each.)
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == decision_spans.__name__
    ]
    assert len(warnings) == 1 and "the decision stands" in warnings[0].getMessage()
