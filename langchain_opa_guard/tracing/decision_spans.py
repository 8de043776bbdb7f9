"""One span and one metric sample per policy decision.

While the engine decides, the decision span is the current span, so an HTTP call to OPA
nests under it and carries its ``traceparent``; OPA's own spans then join the trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from langchain_opa_guard.decision import Decision, ErrorType
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.ops.decision_log import DecisionLog
from langchain_opa_guard.tracing import attributes as A
from langchain_opa_guard.tracing.telemetry import Telemetry

__all__ = [
    "Rules",
    "ajudge",
    "judge",
    "judge_batch",
    "ajudge_batch",
    "record_decision",
    "record_early",
    "record_review",
    "shadow_rule",
]

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
    attributes.update(A.mcp_span_attributes(tool.get("metadata")))  # type: ignore[union-attr]
    kind = SpanKind.INTERNAL if getattr(engine, "in_process", False) else SpanKind.CLIENT
    return telemetry.tracer.start_span(
        f"{A.OP_RUN_GUARDRAIL} {name}", context=parent, kind=kind, attributes=attributes
    )


@dataclass(frozen=True)
class Rules:
    """How the guard treats one call's decision beyond allow/deny.

    Attributes:
        fail_open: A transport failure of the engine (unreachable, timeout, HTTP 5xx: see
            ``ErrorType.TRANSPORT_FAILURES``) lets the call run (explicit per tool; logged
            at WARNING and traced as ``opa.decision.fail_open``). A policy's deny, an
            undefined decision or a malformed answer never does.
        shadow: A predicate on a policy's deny (or approval): when it holds, the decision
            is recorded, traced and counted as "would deny" but the call runs.
        log: Where decisions are recorded for replay.
    """

    fail_open: bool = False
    shadow: Callable[[Decision], bool] | None = None
    log: DecisionLog | None = None


def shadow_rule(shadow: bool | Collection[str], tool: str) -> Callable[[Decision], bool] | None:
    """Shadow mode as a predicate: ``True`` for all, or tool names and reason codes.

    With codes, a decision is shadowed only when every one of its reasons has a code and
    every code is in shadow mode, so a rule under rollout never masks an enforced rule's deny.
    """
    if shadow is True:
        return lambda decision: True
    if not shadow:
        return None
    names = frozenset(shadow)
    if tool in names:
        return lambda decision: True
    # Every reason must carry a code, and every code be in shadow mode: a reason without a
    # code (a plain string, a message alone) is an enforced rule's and is never masked.
    return lambda decision: (
        bool(decision.codes)
        and len(decision.codes) == len(decision.reasons)
        and set(decision.codes) <= names
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
    span.end()
    labels: dict[str, Any] = {
        A.OPA_POLICY_PATH: decision.policy or "",
        A.GEN_AI_TOOL_NAME: tool_label,
        A.OPA_DECISION_VERDICT: _would(decision) if decision.shadowed else verdict,
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
    span = _start(telemetry, engine, {"tool": tool}, parent, conversation_id)
    record_decision(telemetry, span, decision, None, 0.0, tool_label)


def _would(decision: Decision) -> str:
    return "would_approval" if decision.require_approval else "would_deny"


def _settle(decision: Decision, rules: Rules, tool: str, span: Span) -> Decision:
    if decision.allow:
        return decision
    if decision.error is not None:
        if rules.fail_open and decision.error in ErrorType.TRANSPORT_FAILURES:
            logger.warning(
                "policy engine failed (%s); tool %r is configured to fail open, so the call runs",
                decision.error,
                tool,
            )
            span.set_attribute(A.OPA_DECISION_FAIL_OPEN, True)
            return replace(decision, allow=True)
        return decision
    if rules.shadow is not None and rules.shadow(decision):
        logger.info("shadow mode: tool %r would be denied (%s)", tool, ", ".join(decision.codes))
        return replace(decision, allow=True, shadowed=True)
    return decision


def _crash(engine: PolicyEngine) -> Decision:
    logger.exception("policy engine raised; denying the call")
    return Decision.failure(
        ErrorType.ENGINE,
        "the policy engine raised an error",
        engine=getattr(engine, "engine_name", ""),
        policy=getattr(engine, "policy", ""),
    )


def _finish(
    telemetry: Telemetry,
    span: Span,
    decision: Decision,
    document: Mapping[str, Any],
    started: float,
    tool_label: str,
    rules: Rules,
) -> Decision:
    decision = _settle(decision, rules, tool_label, span)
    record_decision(telemetry, span, decision, document, time.perf_counter() - started, tool_label)
    return decision


def _log(rules: Rules, document: Mapping[str, Any], decision: Decision) -> None:
    if rules.log is not None:
        try:
            rules.log.write(document, decision)
        except OSError:
            logger.exception("could not record the decision")


async def _alog(entries: Sequence[tuple[Rules, Mapping[str, Any], Decision]]) -> None:
    """Write decision-log lines from a worker thread: file I/O never runs on the loop."""
    entries = [entry for entry in entries if entry[0].log is not None]

    def write() -> None:
        for entry in entries:
            _log(*entry)

    if entries:
        await asyncio.to_thread(write)


def _interrupted(
    telemetry: Telemetry,
    engine: PolicyEngine,
    spans: Sequence[Span],
    documents: Sequence[Mapping[str, Any]],
    started: float,
    labels: Sequence[str],
) -> None:
    """End the spans of decisions abandoned mid-way (task cancelled, interpreter exiting):
    an ERROR status with ``error.type=cancelled``, and the metric counts them."""
    decision = Decision.failure(
        ErrorType.CANCELLED,
        "the decision was cancelled before it was made",
        engine=getattr(engine, "engine_name", ""),
        policy=getattr(engine, "policy", ""),
    )
    seconds = time.perf_counter() - started
    for span, document, label in zip(spans, documents, labels, strict=True):
        record_decision(telemetry, span, decision, document, seconds, label)


def _finish_batch(
    telemetry: Telemetry,
    spans: list[Span],
    decisions: list[Decision],
    documents: Sequence[Mapping[str, Any]],
    started: float,
    labels: Sequence[str],
    rules: Sequence[Rules],
) -> list[Decision]:
    if len(decisions) != len(documents):
        # An engine that answers a turn with the wrong number of decisions is broken.
        decisions = [
            Decision.failure(ErrorType.ENGINE, "the policy engine answered the turn wrongly")
        ] * len(documents)
    return [
        _finish(telemetry, span, decision, document, started, label, rule)
        for span, decision, document, label, rule in zip(
            spans, decisions, documents, labels, rules, strict=True
        )
    ]


def judge_batch(
    telemetry: Telemetry,
    engine: PolicyEngine,
    documents: Sequence[Mapping[str, Any]],
    parent: otel_context.Context | None,
    conversation_id: str | None,
    labels: Sequence[str],
    rules: Sequence[Rules],
) -> list[Decision]:
    """Decide a turn in one engine round trip; still one decision span per call.

    The request itself runs under the parent (the guard node's span), so OPA's server span
    for the turn is a sibling of the decision spans.
    """
    spans = [_start(telemetry, engine, d, parent, conversation_id) for d in documents]
    token = otel_context.attach(parent) if parent is not None else None
    started = time.perf_counter()
    try:
        decisions = engine.decide_many(documents)
    except Exception:  # noqa: BLE001
        decisions = [_crash(engine)] * len(documents)
    except BaseException:
        _interrupted(telemetry, engine, spans, documents, started, labels)
        raise
    finally:
        if token is not None:
            otel_context.detach(token)
    finished = _finish_batch(telemetry, spans, decisions, documents, started, labels, rules)
    for rule, document, decision in zip(rules, documents, finished, strict=True):
        _log(rule, document, decision)
    return finished


async def ajudge_batch(
    telemetry: Telemetry,
    engine: PolicyEngine,
    documents: Sequence[Mapping[str, Any]],
    parent: otel_context.Context | None,
    conversation_id: str | None,
    labels: Sequence[str],
    rules: Sequence[Rules],
) -> list[Decision]:
    """Async twin of :func:`judge_batch`."""
    spans = [_start(telemetry, engine, d, parent, conversation_id) for d in documents]
    token = otel_context.attach(parent) if parent is not None else None
    started = time.perf_counter()
    try:
        decisions = await engine.adecide_many(documents)
    except Exception:  # noqa: BLE001
        decisions = [_crash(engine)] * len(documents)
    except BaseException:  # cancelled: the spans end, the error says so, then it goes on
        _interrupted(telemetry, engine, spans, documents, started, labels)
        raise
    finally:
        if token is not None:
            otel_context.detach(token)
    finished = _finish_batch(telemetry, spans, decisions, documents, started, labels, rules)
    await _alog(list(zip(rules, documents, finished, strict=True)))
    return finished


def judge(
    telemetry: Telemetry,
    engine: PolicyEngine,
    document: Mapping[str, Any],
    parent: otel_context.Context | None,
    conversation_id: str | None,
    tool_label: str,
    rules: Rules = Rules(),
) -> Decision:
    """Decide one call inside its decision span (which is current meanwhile)."""
    span = _start(telemetry, engine, document, parent, conversation_id)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    started = time.perf_counter()
    try:
        decision = engine.decide(document)
    except Exception:  # noqa: BLE001 - a broken engine denies, it never crashes the graph
        decision = _crash(engine)
    except BaseException:
        _interrupted(telemetry, engine, [span], [document], started, [tool_label])
        raise
    finally:
        otel_context.detach(token)
    decision = _finish(telemetry, span, decision, document, started, tool_label, rules)
    _log(rules, document, decision)
    return decision


async def ajudge(
    telemetry: Telemetry,
    engine: PolicyEngine,
    document: Mapping[str, Any],
    parent: otel_context.Context | None,
    conversation_id: str | None,
    tool_label: str,
    rules: Rules = Rules(),
) -> Decision:
    """Async twin of :func:`judge`."""
    span = _start(telemetry, engine, document, parent, conversation_id)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    started = time.perf_counter()
    try:
        decision = await engine.adecide(document)
    except Exception:  # noqa: BLE001
        decision = _crash(engine)
    except BaseException:  # cancelled: the span ends, the error says so, then it goes on
        _interrupted(telemetry, engine, [span], [document], started, [tool_label])
        raise
    finally:
        otel_context.detach(token)
    decision = _finish(telemetry, span, decision, document, started, tool_label, rules)
    await _alog([(rules, document, decision)])
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
