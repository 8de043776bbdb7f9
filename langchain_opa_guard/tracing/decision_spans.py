"""One span and one metric sample per policy decision: recording only.

The decision path (:mod:`langchain_opa_guard.deciding`) starts a call's span with
:func:`start_span`, keeps it current while the engine decides, and ends it with
:func:`record_decision`; the guards record what never reaches the engine (:func:`record_early`)
and a reviewer's answer (:func:`record_review`).

Recording never stops a decision: an error of the tracing back end (a span processor or a
meter that raises) is logged, once as a warning, and the decision stands (README, "Failure
behaviour").

Example:
    ```python
    span = start_span(telemetry, engine, document, parent=None, conversation_id=None)
    record_decision(telemetry, span, decision, document, seconds=0.002, tool_label="search")
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from langchain_opa_guard.decision import Decision
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.tracing import attributes as A
from langchain_opa_guard.tracing.telemetry import Telemetry

__all__ = [
    "mark_fail_open",
    "record_decision",
    "record_early",
    "record_review",
    "start_span",
]

_ACTIONS = {"allow": "allow", "deny": "block", "approval": "escalate"}

logger = logging.getLogger(__name__)

_warned = False


def _tracing_failed(exc: Exception) -> None:
    """Log that recording failed: a warning the first time, then at debug level."""
    global _warned
    level = logging.DEBUG if _warned else logging.WARNING
    _warned = True
    logger.log(
        level,
        "recording a policy decision's span or metrics failed (%s: %s); the decision stands "
        "and the run goes on",
        type(exc).__name__,
        str(exc)[:200],
    )


def start_span(
    telemetry: Telemetry,
    engine: PolicyEngine,
    document: Mapping[str, Any],
    parent: otel_context.Context | None,
    conversation_id: str | None,
) -> Span:
    """The decision span of the call ``document`` names, started (OTel's invalid span when
    the back end fails)."""
    try:
        return _start_span(telemetry, engine, document, parent, conversation_id)
    except Exception as exc:  # noqa: BLE001 - tracing never stops a decision
        _tracing_failed(exc)
        return INVALID_SPAN


def _start_span(
    telemetry: Telemetry,
    engine: PolicyEngine,
    document: Mapping[str, Any],
    parent: otel_context.Context | None,
    conversation_id: str | None,
) -> Span:
    kind = SpanKind.INTERNAL if getattr(engine, "in_process", False) else SpanKind.CLIENT
    if not telemetry.records_spans():
        # OTel's no-op span for the parent (the context passed on to OPA): nothing to name.
        return telemetry.tracer.start_span(A.OP_RUN_GUARDRAIL, context=parent, kind=kind)
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
    attributes.update(A.mcp_span_attributes(tool.get("metadata")))  # type: ignore[union-attr]
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
    try:
        _annotate(telemetry, span, decision, document)
    except Exception as exc:  # noqa: BLE001 - tracing never stops a decision
        _tracing_failed(exc)
    try:
        span.end()
    except Exception as exc:  # noqa: BLE001
        _tracing_failed(exc)
    try:
        _count(telemetry, decision, seconds, tool_label)
    except Exception as exc:  # noqa: BLE001
        _tracing_failed(exc)


def _annotate(
    telemetry: Telemetry, span: Span, decision: Decision, document: Mapping[str, Any] | None
) -> None:
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
        if decision.decision_id:
            span.set_attribute(A.OPA_DECISION_ID, decision.decision_id)
        if decision.revision:
            span.set_attribute(A.OPA_POLICY_REVISION, decision.revision)
        if decision.shadowed:
            span.set_attribute(A.OPA_DECISION_SHADOW, True)
            span.set_attribute(A.OPA_DECISION_WOULD, _would(decision))
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
        if document is not None:
            digest = telemetry.input_hash(document)
            span.set_attribute(A.OPA_INPUT_HASH, digest)
            span.set_attribute(A.SECURITY_CONTENT_INPUT_HASH, digest)
            tool = document.get("tool")
            captured = telemetry.content("opa.input", tool)
            if captured is not None:
                span.set_attribute(A.GEN_AI_TOOL_CALL_ARGUMENTS, captured)
            if decision.args is not None and isinstance(tool, Mapping):
                span.set_attribute(A.OPA_ARGS_REWRITTEN, True)
                span.set_attribute(
                    A.OPA_ARGS_PROPOSED_HASH, telemetry.input_hash(tool.get("args") or {})
                )
                span.set_attribute(A.OPA_ARGS_EXECUTED_HASH, telemetry.input_hash(decision.args))
        if decision.error is not None:
            span.set_attribute(A.ERROR_TYPE, decision.error)
            span.set_status(
                Status(StatusCode.ERROR, decision.reasons[0] if decision.reasons else "")
            )


def _count(telemetry: Telemetry, decision: Decision, seconds: float, tool_label: str) -> None:
    labels: dict[str, Any] = {
        A.OPA_POLICY_PATH: decision.policy or "",
        A.GEN_AI_TOOL_NAME: tool_label,
        A.OPA_DECISION_VERDICT: _would(decision) if decision.shadowed else decision.verdict,
    }
    if decision.error is not None:
        labels[A.ERROR_TYPE] = decision.error
    telemetry.decisions.add(1, labels)
    telemetry.decision_duration.record(seconds, labels)


def record_early(
    telemetry: Telemetry,
    engine: PolicyEngine,
    call: Mapping[str, Any],
    decision: Decision,
    parent: otel_context.Context | None,
    conversation_id: str | None,
    tool_label: str,
) -> None:
    """The span of a call denied before the engine was asked (no id, bad arguments, ...)."""
    name = call.get("name")
    tool = {"name": name if isinstance(name, str) else str(name), "call_id": call.get("id")}
    span = start_span(telemetry, engine, {"tool": tool}, parent, conversation_id)
    record_decision(telemetry, span, decision, None, 0.0, tool_label)


def mark_fail_open(span: Span) -> None:
    """Mark a decision span whose call runs although the engine failed (fail-open)."""
    try:
        span.set_attribute(A.OPA_DECISION_FAIL_OPEN, True)
    except Exception as exc:  # noqa: BLE001 - tracing never stops a decision
        _tracing_failed(exc)


def _would(decision: Decision) -> str:
    return "would_approval" if decision.require_approval else "would_deny"


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
    try:
        span = telemetry.tracer.start_span(
            f"human_review {name}", context=parent, attributes=attributes
        )
        span.end()
    except Exception as exc:  # noqa: BLE001 - tracing never stops a review
        _tracing_failed(exc)
