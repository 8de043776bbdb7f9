"""The trace an auditor reads: structure, nesting, content rules and metrics (in-memory SDK)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from test_guard_node import INTERNAL, mixed_turn_model

from langchain_opa_guard import OPAServer, OTelCallbackHandler, PolicyEngine, format_span_tree
from langchain_opa_guard.demo import build_agent, customer_db_tools
from langchain_opa_guard.testing import ScriptedChatModel, tool_call
from langchain_opa_guard.tracing import attributes as A


class Recorder:
    def __init__(self, **handler_options: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.handler = OTelCallbackHandler(self.provider, self.meters, **handler_options)

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def by_name(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        parent_id = span.parent.span_id if span.parent else None
        return next((s for s in self.spans if s.context.span_id == parent_id), None)

    def metric_points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        points = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.provider.shutdown()


def run_mixed(engine: PolicyEngine, rec: Recorder, mode: str) -> Any:
    tools, db = customer_db_tools()
    graph = build_agent(engine, mixed_turn_model(), tools)
    config = {"callbacks": [rec.handler], "configurable": {"thread_id": "thread-42"}}
    inputs = {"messages": [("user", "go")]}
    context = {"user": INTERNAL}
    if mode == "invoke":
        graph.invoke(inputs, config, context=context)
    elif mode == "ainvoke":
        asyncio.run(graph.ainvoke(inputs, config, context=context))
    elif mode == "stream":
        list(graph.stream(inputs, config, context=context))
    else:

        async def consume() -> None:
            async for _ in graph.astream(inputs, config, context=context):
                pass

        asyncio.run(consume())
    return db


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_one_nested_trace_per_run(engine: PolicyEngine, recorder: Recorder, mode: str) -> None:
    run_mixed(engine, recorder, mode)
    spans = recorder.spans
    assert len({s.context.trace_id for s in spans}) == 1, format_span_tree(spans)
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "invoke_agent LangGraph"
    assert root.attributes[A.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert root.attributes[A.GEN_AI_CONVERSATION_ID] == "thread-42"

    nodes = [s for s in spans if A.LANGGRAPH_NODE in s.attributes]
    assert [(s.name, s.attributes[A.LANGGRAPH_STEP]) for s in nodes] == [
        ("agent", 1),
        ("guard", 2),
        ("tools", 3),
        ("agent", 4),
    ]
    assert all(recorder.parent_of(s) is root for s in nodes)

    chats = recorder.by_name("chat ")
    assert len(chats) == 2 and all(recorder.parent_of(c).name == "agent" for c in chats)
    assert chats[0].attributes[A.GEN_AI_REQUEST_MODEL] == "scripted-model"
    assert chats[0].attributes[A.GEN_AI_USAGE_INPUT_TOKENS] >= 1
    assert chats[0].kind == trace.SpanKind.CLIENT

    decisions = recorder.by_name("run_guardrail ")
    assert len(decisions) == 3
    guard = next(s for s in nodes if s.name == "guard")
    assert all(recorder.parent_of(d) is guard for d in decisions)
    verdicts = {
        d.attributes[A.GEN_AI_TOOL_CALL_ID]: d.attributes[A.OPA_DECISION_ALLOW] for d in decisions
    }
    assert verdicts == {"c-read": True, "c-pii": False, "c-upd": False}
    for d in decisions:
        assert d.attributes[A.OPA_POLICY_PATH] == "agent/authz/decision"
        assert d.attributes[A.OPA_ENGINE] == engine.engine_name
        assert d.attributes[A.OPA_INPUT_HASH].startswith("hmac-sha256:")
        assert d.status.status_code != StatusCode.ERROR  # a denial is not an error
        if engine.engine_name == "opa":
            assert d.attributes[A.OPA_DECISION_ID]
            assert d.kind == trace.SpanKind.CLIENT

    tools = recorder.by_name("execute_tool ")
    assert [t.attributes[A.GEN_AI_TOOL_CALL_ID] for t in tools] == ["c-read"]  # denied: no span
    assert recorder.parent_of(tools[0]).name == "tools"
    assert tools[0].attributes[A.GEN_AI_TOOL_NAME] == "get_customer_details"
    assert recorder.handler.open_runs == 0


def test_parallel_tool_calls_keep_their_parent(embedded: PolicyEngine, recorder: Recorder) -> None:
    tools, _db = customer_db_tools()
    calls = [
        tool_call(
            "get_customer_details",
            {"customer_id": f"CUST-00{i}", "fields": {"name": True}},
            f"p{i}",
        )
        for i in range(1, 4)
    ]
    model = ScriptedChatModel(script=[AIMessage("", tool_calls=calls), "done"])
    graph = build_agent(embedded, model, tools)
    for _ in range(3):
        graph.invoke(
            {"messages": [("user", "go")]},
            {"callbacks": [recorder.handler]},
            context={"user": INTERNAL},
        )
    executed = recorder.by_name("execute_tool ")
    assert len(executed) == 9
    for span in executed:
        assert recorder.parent_of(span).name == "tools"
    assert len({s.context.trace_id for s in recorder.spans}) == 3


def test_breaking_out_of_a_stream_ends_every_span(
    embedded: PolicyEngine, recorder: Recorder
) -> None:
    tools, _ = customer_db_tools()
    graph = build_agent(embedded, mixed_turn_model(), tools)
    config = {"callbacks": [recorder.handler]}
    for chunk in graph.stream({"messages": [("user", "go")]}, config, context={"user": INTERNAL}):
        if "guard" in chunk:
            break

    async def abandon() -> None:
        stream = graph.astream({"messages": [("user", "go")]}, config, context={"user": INTERNAL})
        async for chunk in stream:
            if "guard" in chunk:
                break
        await stream.aclose()

    asyncio.run(abandon())
    assert recorder.handler.open_runs == 0
    roots = [s for s in recorder.spans if s.parent is None]
    assert len(roots) == 2  # both runs' root spans ended and were exported


def test_an_interrupt_is_control_flow_not_an_error(recorder: Recorder) -> None:
    def ask(state: MessagesState) -> dict[str, Any]:
        answer = interrupt({"question": "approve?"})
        return {"messages": [AIMessage(f"human said {answer}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"callbacks": [recorder.handler], "configurable": {"thread_id": "t-int"}}
    graph.invoke({"messages": [("user", "hi")]}, config)
    graph.invoke(Command(resume="yes"), config)
    spans = recorder.spans
    assert not [s for s in spans if s.status.status_code == StatusCode.ERROR], format_span_tree(
        spans
    )
    interrupted = [s for s in spans if s.attributes.get(A.LANGGRAPH_INTERRUPTED)]
    assert interrupted and recorder.handler.open_runs == 0


def test_content_is_off_by_default(embedded: PolicyEngine, recorder: Recorder) -> None:
    run_mixed(embedded, recorder, "invoke")
    dumped = json.dumps([dict(s.attributes) for s in recorder.spans], default=str)
    for secret in ("CUST-001", "Ada Lovelace", '"go"'):
        assert secret not in dumped
    assert A.GEN_AI_INPUT_MESSAGES not in dumped and A.GEN_AI_TOOL_CALL_ARGUMENTS not in dumped


def test_opt_in_content_is_redacted_and_capped(embedded: PolicyEngine) -> None:
    seen: list[str] = []

    def redact(name: str, value: Any) -> Any:
        seen.append(name)
        return json.loads(json.dumps(value, default=str).replace("Ada Lovelace", "[name]"))

    rec = Recorder(capture_content=True, redact=redact, max_attribute_bytes=300)
    run_mixed(embedded, rec, "invoke")
    tool_span = rec.by_name("execute_tool ")[0]
    assert "CUST-001" in tool_span.attributes[A.GEN_AI_TOOL_CALL_ARGUMENTS]
    assert tool_span.attributes[A.GEN_AI_TOOL_CALL_RESULT] == '{"name": "[name]"}'
    for span in rec.spans:
        for value in span.attributes.values():
            if isinstance(value, str):
                assert len(value.encode()) <= 300
    assert A.GEN_AI_INPUT_MESSAGES in seen and A.GEN_AI_TOOL_CALL_RESULT in seen
    assert any(str(v).endswith("...[truncated]") for s in rec.spans for v in s.attributes.values())


def test_engine_failure_is_an_error_on_the_decision_span(recorder: Recorder) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run_mixed(OPAServer(f"http://127.0.0.1:{port}", timeout=0.5), recorder, "invoke")
    decisions = recorder.by_name("run_guardrail ")
    assert len(decisions) == 3
    for d in decisions:
        assert d.status.status_code == StatusCode.ERROR
        assert d.attributes[A.ERROR_TYPE] == "unreachable"
        assert d.attributes[A.OPA_DECISION_ALLOW] is False
    assert not recorder.by_name("execute_tool ")


def test_decision_metrics(engine: PolicyEngine, recorder: Recorder) -> None:
    run_mixed(engine, recorder, "invoke")
    counts = {
        (p.attributes[A.GEN_AI_TOOL_NAME], p.attributes[A.OPA_DECISION_VERDICT]): p.value
        for p in recorder.metric_points(A.METRIC_DECISIONS)
    }
    assert counts == {
        ("get_customer_details", "allow"): 1,
        ("get_customer_details", "deny"): 1,
        ("update_customer_status", "deny"): 1,
    }
    durations = recorder.metric_points(A.METRIC_DECISION_DURATION)
    assert sum(p.count for p in durations) == 3
    for point in durations:
        assert (
            A.OPA_DECISION_ID not in point.attributes
            and A.GEN_AI_TOOL_CALL_ID not in point.attributes
        )
    tool_points = recorder.metric_points(A.METRIC_EXECUTE_TOOL_DURATION)
    assert [p.attributes[A.GEN_AI_TOOL_NAME] for p in tool_points] == ["get_customer_details"]


def test_the_run_registry_is_bounded(embedded: PolicyEngine) -> None:
    rec = Recorder(max_runs=2)
    run_mixed(embedded, rec, "invoke")
    assert rec.handler.open_runs == 0
    assert any(s.attributes.get("langchain.run.evicted") for s in rec.spans)


def test_the_library_installs_no_global_provider(
    embedded: PolicyEngine, recorder: Recorder
) -> None:
    before = trace.get_tracer_provider()
    run_mixed(embedded, recorder, "invoke")
    assert trace.get_tracer_provider() is before
    assert not isinstance(before, TracerProvider)


def test_span_tree_reads_like_the_run(embedded: PolicyEngine, recorder: Recorder) -> None:
    run_mixed(embedded, recorder, "invoke")
    tree = format_span_tree(recorder.spans).splitlines()
    assert tree[0].startswith("invoke_agent LangGraph")
    assert any(line.startswith("  guard") for line in tree)
    assert any(line.startswith("    run_guardrail update_customer_status") for line in tree)
    assert "      - pii_fields_for_role" in tree  # reason codes by default
    assert not any("may not read PII fields" in line for line in tree)


def test_reason_texts_only_with_content_capture(embedded: PolicyEngine) -> None:
    quiet = Recorder()
    run_mixed(embedded, quiet, "invoke")
    (pii,) = [
        s for s in quiet.by_name("run_guardrail") if s.attributes[A.GEN_AI_TOOL_CALL_ID] == "c-pii"
    ]
    assert pii.attributes[A.OPA_DECISION_REASON_CODES] == ("pii_fields_for_role",)
    assert A.OPA_DECISION_REASONS not in pii.attributes
    loud = Recorder(capture_content=True)
    run_mixed(embedded, loud, "invoke")
    tree = format_span_tree(loud.spans)
    assert 'role "internal_user" may not read PII fields: email' in tree


def test_retrievers_get_a_span_in_their_node(recorder: Recorder) -> None:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class Notes(BaseRetriever):
        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            return [Document(page_content=f"note about {query}"), Document(page_content="more")]

    retriever = Notes()

    def lookup(state: MessagesState) -> dict[str, Any]:
        docs = retriever.invoke("customers")
        return {"messages": [AIMessage(docs[0].page_content)]}

    builder = StateGraph(MessagesState)
    builder.add_node("lookup", lookup)
    builder.add_edge(START, "lookup")
    builder.add_edge("lookup", END)
    builder.compile().invoke({"messages": [("user", "hi")]}, {"callbacks": [recorder.handler]})
    (span,) = recorder.by_name("retrieval ")
    assert span.name == "retrieval Notes"
    assert span.attributes[A.GEN_AI_OPERATION_NAME] == "retrieval"
    assert span.attributes["gen_ai.retrieval.documents.count"] == 2
    assert recorder.parent_of(span).name == "lookup"
    assert "customers" not in json.dumps([dict(s.attributes) for s in recorder.spans])


def test_decision_spans_without_a_provider_keep_the_parent_context() -> None:
    """With no tracer provider (OTel's no-op) a decision's span is OTel's own no-op span for
    its parent (newer OTel releases keep the caller's trace context in it, to pass on to
    OPA); with a provider, a recorded span named for the tool."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from langchain_opa_guard.tracing.decision_spans import start_span
    from langchain_opa_guard.tracing.telemetry import Telemetry

    engine: Any = type("Engine", (), {"policy": "agent/authz/decision", "in_process": True})()
    document = {"tool": {"name": "search", "call_id": "c1", "args": {}}}
    parent_context = SpanContext(
        trace_id=0x1234, span_id=0x99, is_remote=True, trace_flags=TraceFlags(1)
    )
    parent = trace.set_span_in_context(NonRecordingSpan(parent_context))
    quiet = Telemetry(trace.NoOpTracerProvider())
    assert not quiet.records_spans()
    span = start_span(quiet, engine, document, parent, None)
    assert not span.is_recording()
    assert span.get_span_context() == trace.NoOpTracer().start_span("x", parent).get_span_context()
    global_tracer = Telemetry()
    assert global_tracer.records_spans() == (
        not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorded = Telemetry(provider)
    assert recorded.records_spans()
    span = start_span(recorded, engine, document, parent, None)
    span.end()
    (finished,) = exporter.get_finished_spans()
    assert finished.name.endswith("search")
    assert finished.context.trace_id == 0x1234
    assert (finished.attributes or {})[A.GEN_AI_TOOL_CALL_ID] == "c1"
