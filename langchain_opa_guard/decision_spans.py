"""One span and one metric sample per policy decision.

While the engine decides, the decision span is the current span, so an HTTP call to OPA
nests under it and carries its ``traceparent``; OPA's own spans then join the trace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from langchain_opa_guard import attributes as A
from langchain_opa_guard.decision import Decision, ErrorType
from langchain_opa_guard.engine import PolicyEngine
from langchain_opa_guard.telemetry import Telemetry

__all__ = ["ajudge", "judge", "record_decision", "record_review"]

logger = logging.getLogger(__name__)

_ACTIONS = {"allow": "allow", "deny": "block", "approval": "escalate"}


def _start(
    telemetry: Telemetry,
    engine: PolicyEngine,
    document: Mapping[str, Any],
    parent: otel_context.Context | None,
    conversation_id: str | None,
) -> Span:
    tool = document.get("tool") if isinstance(document.get("tool"), Mapping) else {}
    name = str(tool.get("name", ""))  # type: ignore[union-attr]
    attributes: dict[str, Any] = {
        A.GEN_AI_OPERATION_NAME: A.OP_RUN_GUARDRAIL,
        A.GEN_AI_TOOL_NAME: name,
        A.SECURITY_TARGET_TYPE: "tool_call",
        A.SECURITY_GUARDRAIL_NAME: "opa",
        A.SECURITY_GUARDRAIL_PROVIDER: "open-policy-agent",
        A.SECURITY_POLICY_ID: engine.policy,
        A.OPA_POLICY_PATH: engine.policy,
        A.OPA_ENGINE: getattr(engine, "engine_name", type(engine).__name__),
    }
    call_id = tool.get("call_id")  # type: ignore[union-attr]
    if isinstance(call_id, str):
        attributes[A.GEN_AI_TOOL_CALL_ID] = call_id
        attributes[A.SECURITY_TARGET_ID] = call_id
    if conversation_id:
        attributes[A.GEN_AI_CONVERSATION_ID] = conversation_id
    kind = SpanKind.INTERNAL if getattr(engine, "in_process", False) else SpanKind.CLIENT
    return telemetry.tracer.start_span(
        f"{A.OP_RUN_GUARDRAIL} {name}", context=parent, kind=kind, attributes=attributes
    )


def record_decision(
    telemetry: Telemetry,
    span: Span,
    decision: Decision,
    document: Mapping[str, Any] | None,
    seconds: float,
    tool_label: str,
) -> None:
    """Finish a decision span and count the decision."""
    verdict = decision.verdict
    if span.is_recording():
        span.set_attribute(A.OPA_DECISION_ALLOW, decision.allow)
        span.set_attribute(A.OPA_DECISION_VERDICT, verdict)
        span.set_attribute(A.SECURITY_VERDICT_TYPE, verdict)
        span.set_attribute(A.SECURITY_ACTION_TYPE, _ACTIONS[verdict])
        span.set_attribute(A.OPA_DECISION_REASON_COUNT, len(decision.reasons))
        if decision.codes:
            span.set_attribute(A.OPA_DECISION_REASON_CODES, list(decision.codes[:16]))
            span.set_attribute(A.SECURITY_VERDICT_CODE, decision.codes[0])
        if decision.error is not None:
            # Engine failures are the guard's own words: never argument values.
            span.set_attribute(A.OPA_DECISION_REASONS, list(decision.reasons))
        elif decision.reasons and telemetry.capture_content:
            # A policy's reasons may quote arguments: recorded only with content capture.
            reasons = [
                r
                for r in (
                    telemetry.content(A.OPA_DECISION_REASONS, x) for x in decision.reasons[:16]
                )
                if r is not None
            ]
            if reasons:
                span.set_attribute(A.OPA_DECISION_REASONS, reasons)
                span.set_attribute(A.SECURITY_VERDICT_REASON, reasons[0])
        if decision.decision_id:
            span.set_attribute(A.OPA_DECISION_ID, decision.decision_id)
        if document is not None:
            digest = telemetry.input_hash(document)
            span.set_attribute(A.OPA_INPUT_HASH, digest)
            span.set_attribute(A.SECURITY_CONTENT_INPUT_HASH, digest)
            captured = telemetry.content("opa.input", document.get("tool"))
            if captured is not None:
                span.set_attribute(A.GEN_AI_TOOL_CALL_ARGUMENTS, captured)
        if decision.error is not None:
            span.set_attribute(A.ERROR_TYPE, decision.error)
            span.set_status(
                Status(StatusCode.ERROR, decision.reasons[0] if decision.reasons else "")
            )
    span.end()
    labels: dict[str, Any] = {
        A.OPA_POLICY_PATH: decision.policy or "",
        A.GEN_AI_TOOL_NAME: tool_label,
        A.OPA_DECISION_VERDICT: verdict,
    }
    if decision.error is not None:
        labels[A.ERROR_TYPE] = decision.error
    telemetry.decisions.add(1, labels)
    telemetry.decision_duration.record(seconds, labels)


def _opened(decision: Decision, tool: str, span: Span) -> Decision:
    logger.warning(
        "policy engine failed (%s); tool %r is configured to fail open, so the call runs",
        decision.error,
        tool,
    )
    span.set_attribute(A.OPA_DECISION_FAIL_OPEN, True)
    return replace(decision, allow=True)


def _crash(engine: PolicyEngine) -> Decision:
    logger.exception("policy engine raised; denying the call")
    return Decision.failure(
        ErrorType.ENGINE,
        "the policy engine raised an error",
        engine=getattr(engine, "engine_name", ""),
        policy=getattr(engine, "policy", ""),
    )


def judge(
    telemetry: Telemetry,
    engine: PolicyEngine,
    document: Mapping[str, Any],
    parent: otel_context.Context | None,
    conversation_id: str | None,
    tool_label: str,
    fail_open: bool = False,
) -> Decision:
    """Decide one call inside its decision span (which is current meanwhile).

    With ``fail_open`` (an explicit per-tool choice), an engine *failure* lets the call
    run; the decision keeps its ``error``, is logged at WARNING and traced as fail-open.
    A policy's deny is never turned into an allow.
    """
    span = _start(telemetry, engine, document, parent, conversation_id)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    started = time.perf_counter()
    try:
        decision = engine.decide(document)
    except Exception:  # noqa: BLE001 - a broken engine denies, it never crashes the graph
        decision = _crash(engine)
    finally:
        otel_context.detach(token)
    if fail_open and decision.error is not None:
        decision = _opened(decision, tool_label, span)
    record_decision(telemetry, span, decision, document, time.perf_counter() - started, tool_label)
    return decision


async def ajudge(
    telemetry: Telemetry,
    engine: PolicyEngine,
    document: Mapping[str, Any],
    parent: otel_context.Context | None,
    conversation_id: str | None,
    tool_label: str,
    fail_open: bool = False,
) -> Decision:
    """Async twin of :func:`judge`."""
    span = _start(telemetry, engine, document, parent, conversation_id)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    started = time.perf_counter()
    try:
        decision = await engine.adecide(document)
    except Exception:  # noqa: BLE001
        decision = _crash(engine)
    finally:
        otel_context.detach(token)
    if fail_open and decision.error is not None:
        decision = _opened(decision, tool_label, span)
    record_decision(telemetry, span, decision, document, time.perf_counter() - started, tool_label)
    return decision


def record_review(
    telemetry: Telemetry,
    parent: otel_context.Context | None,
    call: Mapping[str, Any],
    action: str,
) -> None:
    """A span for a human reviewer's answer on one call."""
    name = str(call.get("name", ""))
    attributes: dict[str, Any] = {
        A.GEN_AI_TOOL_NAME: name,
        A.SECURITY_TARGET_TYPE: "tool_call",
        A.SECURITY_ACTION_TYPE: {"approve": "allow", "edit": "modify"}.get(action, "block"),
        "opa.review.action": action,
    }
    if isinstance(call.get("id"), str):
        attributes[A.GEN_AI_TOOL_CALL_ID] = call["id"]
    telemetry.tracer.start_span(f"human_review {name}", context=parent, attributes=attributes).end()
