"""``python -m langchain_opa_guard.demo``: the five customer-database scenarios, guarded.

Runs on the embedded engine (no server, no network) unless ``OPA_URL`` names an OPA server.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage

from langchain_opa_guard.demo.customer_db import (
    build_agent,
    customer_db_tools,
    load_scenarios,
    scenario_model,
)
from langchain_opa_guard.engines.embedded import EmbeddedPolicy
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.engines.server.opa_server import OPAServer
from langchain_opa_guard.tracing.callback_handler import OTelCallbackHandler
from langchain_opa_guard.tracing.span_tree import format_span_tree


def _engine(policies: str) -> PolicyEngine:
    url = os.environ.get("OPA_URL")
    if url:
        return OPAServer(url)
    return EmbeddedPolicy(policies)


def _tracing() -> tuple[Any, Any]:
    """A local TracerProvider: spans kept in memory for the tree, and sent over OTLP when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. The global provider is left alone."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "langchain-opa-guard-demo"})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider, memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policies", default="policies", help="policy directory (embedded engine)")
    parser.add_argument("--no-trace", action="store_true", help="do not print the span trees")
    args = parser.parse_args(argv)
    provider, memory = _tracing()
    handler = OTelCallbackHandler(provider, agent_name="customer-db-agent")

    engine = _engine(args.policies)
    scenarios = load_scenarios()
    tools, db = customer_db_tools()
    graph = build_agent(engine, scenario_model(scenarios), tools)
    print(f"langchain-opa-guard demo - engine: {engine!r}\n")
    failures = 0
    for number, scenario in enumerate(scenarios, 1):
        ran_before = len(db.executed)
        memory.clear()
        result: dict[str, Any] = graph.invoke(
            {"messages": [("user", scenario.query)]},
            {"callbacks": [handler], "configurable": {"thread_id": f"demo-{number}"}},
            context={"user": scenario.user},
        )
        messages = result["messages"]
        call = next(m for m in messages if isinstance(m, AIMessage) and m.tool_calls).tool_calls[0]
        answer = next(m for m in messages if isinstance(m, ToolMessage))
        ran = len(db.executed) > ran_before
        verdict = "allow" if ran else "deny"
        ok = verdict == scenario.expect
        failures += not ok
        print(f"{number}. {scenario.name}")
        who = f"{scenario.user_name} ({scenario.user['role']})"
        print(f"   user:     {who}   asks: {scenario.query!r}")
        print(f"   proposed: {call['name']}({call['args']})")
        note = "" if ok else " - MISMATCH"
        print(f"   decision: {verdict.upper()}   (expected {scenario.expect}{note})")
        print(f"   agent saw: {answer.content}")
        print(f"   agent said: {messages[-1].content}")
        if not args.no_trace:
            tree = format_span_tree(memory.get_finished_spans())
            print("   trace:\n" + "\n".join(f"     {line}" for line in tree.splitlines()))
        print()
    provider.shutdown()
    print(f"{len(scenarios) - failures}/{len(scenarios)} scenarios behaved as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
