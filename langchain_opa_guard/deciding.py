"""The decision path: the policy engine decides one tool call, or all the calls of a turn.

Every guard decides through here. For each call (a :class:`Job`: the policy input and how the
guard treats the answer) :func:`decide_call`:

1. asks the engine while the call's decision span is the current span, so an HTTP call to OPA
   nests under it and carries its ``traceparent`` (OPA's own spans then join the trace);
2. turns an engine that raises into a fail-closed ``engine_error`` decision, and a cancelled
   task into ``cancelled`` spans before the cancellation goes on;
3. settles the guard's :class:`Rules` beyond allow/deny: fail-open on a transport failure
   (only for the tools configured so, logged at WARNING, and only when the engine does not
   answer its health check either), shadow mode for a policy's deny;
4. records the decision's span and metric samples
   (:mod:`langchain_opa_guard.tracing.decision_spans`) and writes the decision log
   (:mod:`langchain_opa_guard.ops.decision_log`), off the event loop in the async twins.

:func:`decide_calls` decides a turn: in one round trip when the engine batches (still one span
per call), concurrently when it answers over the network, in order when it runs in process.

Why one module: the sync and async twins of one call and of a turn share every step after
the engine answers (settling fail-open, shadow mode and rewrites, the span, the log); split
apart, each would reach into the other's private steps.

Example:
    ```python
    from langchain_opa_guard.deciding import Job, Rules, decide_call
    from langchain_opa_guard.tracing.telemetry import Telemetry

    job = Job(Telemetry(), engine, document, None, None, "search", Rules(fail_open=True))
    decision = decide_call(job)
    ```
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from langchain_opa_guard.decision import Decision, EngineError, ErrorType
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.engines.workers import Workers, shared_workers
from langchain_opa_guard.ops.decision_log import DecisionLog
from langchain_opa_guard.tracing.decision_spans import mark_fail_open, record_decision, start_span
from langchain_opa_guard.tracing.telemetry import Telemetry

__all__ = [
    "Job",
    "Rules",
    "adecide_call",
    "adecide_calls",
    "decide_call",
    "decide_calls",
    "engine_crash",
    "shadow_rule",
]

logger = logging.getLogger(__name__)


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
        rewrite: The allow of a call whose arguments the policy rewrote, read back through
            its tool (:func:`~.guards.rewrites.read_back`): it, or an ``invalid_call`` deny.
    """

    fail_open: bool = False
    shadow: Callable[[Decision], bool] | None = None
    log: DecisionLog | None = None
    rewrite: Callable[[Decision], Decision] | None = None


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


@dataclass(frozen=True)
class Job:
    """One call to decide: its policy input, where its span goes, and the guard's rules.

    Attributes:
        telemetry: The tracer and meters of the run (or of the guard).
        engine: The policy engine.
        document: The policy input.
        parent: The context the decision span nests in (``None``: the current one).
        conversation_id: The thread id, traced as ``gen_ai.conversation.id``.
        tool_label: The tool's name as metrics label it.
        rules: Fail-open, shadow mode and the decision log for this call.
    """

    telemetry: Telemetry
    engine: PolicyEngine
    document: Mapping[str, Any]
    parent: otel_context.Context | None
    conversation_id: str | None
    tool_label: str
    rules: Rules = field(default_factory=Rules)


def engine_crash(engine: PolicyEngine) -> Decision:
    """The fail-closed decision for an engine that raised, or gave no answer for a call."""
    return Decision.failure(
        ErrorType.ENGINE,
        "the policy engine raised an error",
        engine=getattr(engine, "engine_name", ""),
        policy=getattr(engine, "policy", ""),
    )


# -- one call ------------------------------------------------------------------------------


def decide_call(job: Job) -> Decision:
    """Decide one call inside its decision span (which is current meanwhile)."""
    span = _start(job)
    token = otel_context.attach(trace.set_span_in_context(span, job.parent))
    started = time.perf_counter()
    try:
        decision = job.engine.decide(job.document)
    except Exception:  # noqa: BLE001 - a broken engine denies, it never crashes the graph
        decision = _crashed(job.engine)
    except BaseException:
        _interrupted([job], [span], started)
        raise
    finally:
        otel_context.detach(token)
    decision = _finish(job, span, decision, started, _late(job, decision) and _up(job.engine))
    _log(job, decision)
    return decision


async def adecide_call(job: Job) -> Decision:
    """Async twin of :func:`decide_call`."""
    span = _start(job)
    token = otel_context.attach(trace.set_span_in_context(span, job.parent))
    started = time.perf_counter()
    try:
        try:
            decision = await job.engine.adecide(job.document)
        except Exception:  # noqa: BLE001
            decision = _crashed(job.engine)
        up = _late(job, decision) and await asyncio.to_thread(_up, job.engine)
    except BaseException:  # cancelled: the span ends, the error says so, then it goes on
        _interrupted([job], [span], started)
        raise
    finally:
        otel_context.detach(token)
    decision = _finish(job, span, decision, started, up)
    await _alog([(job, decision)])
    return decision


# -- the calls of a turn -------------------------------------------------------------------


def _whole_turn(engine: PolicyEngine, jobs: Sequence[Job], method: str) -> bool:
    """Whether the turn goes to the engine at once (``decide_many``): an engine that
    batches, and an in-process engine, which then decides the whole turn on one policy
    (a reload during the turn decides it again, never part of it on each)."""
    if len(jobs) < 2:
        return False
    if getattr(engine, "batches", False):
        return True
    return bool(getattr(engine, "in_process", False)) and callable(getattr(engine, method, None))


def decide_calls(jobs: Sequence[Job]) -> list[Decision]:
    """Decide a turn: in one round trip when the engine batches, concurrently over the
    network otherwise, in process as one turn. The jobs share one engine."""
    if not jobs:
        return []
    engine = jobs[0].engine
    if _whole_turn(engine, jobs, "decide_many"):
        return _decide_batch(jobs)
    if len(jobs) > 1 and not getattr(engine, "in_process", False):
        return _io_pool(engine).map(decide_call, jobs)
    return [decide_call(job) for job in jobs]


async def adecide_calls(jobs: Sequence[Job]) -> list[Decision]:
    """Async twin of :func:`decide_calls`; in-process evaluation runs off the event loop."""
    if not jobs:
        return []
    engine = jobs[0].engine
    if _whole_turn(engine, jobs, "adecide_many"):
        return await _adecide_batch(jobs)
    if getattr(engine, "in_process", False):
        return await _cpu_pool().run(lambda: [decide_call(job) for job in jobs])
    if len(jobs) == 1:
        return [await adecide_call(jobs[0])]
    return list(await asyncio.gather(*(adecide_call(job) for job in jobs)))


def _decide_batch(jobs: Sequence[Job]) -> list[Decision]:
    """A turn in one engine round trip; still one decision span per call.

    The request itself runs under the parent (the guard node's span), so OPA's server span
    for the turn is a sibling of the decision spans.
    """
    first = jobs[0]
    spans = [_start(job) for job in jobs]
    token = otel_context.attach(first.parent) if first.parent is not None else None
    started = time.perf_counter()
    try:
        decisions = first.engine.decide_many([job.document for job in jobs])
    except Exception:  # noqa: BLE001
        decisions = [_crashed(first.engine)] * len(jobs)
    except BaseException:
        _interrupted(jobs, spans, started)
        raise
    finally:
        if token is not None:
            otel_context.detach(token)
    late = any(_late(job, d) for job, d in zip(jobs, decisions, strict=False))
    up = late and _up(first.engine)  # one probe for the turn
    finished = _finish_batch(jobs, spans, decisions, started, up)
    for job, decision in zip(jobs, finished, strict=True):
        _log(job, decision)
    return finished


async def _adecide_batch(jobs: Sequence[Job]) -> list[Decision]:
    """Async twin of :func:`_decide_batch`."""
    first = jobs[0]
    spans = [_start(job) for job in jobs]
    token = otel_context.attach(first.parent) if first.parent is not None else None
    started = time.perf_counter()
    try:
        try:
            decisions = await first.engine.adecide_many([job.document for job in jobs])
        except Exception:  # noqa: BLE001
            decisions = [_crashed(first.engine)] * len(jobs)
        late = any(_late(job, d) for job, d in zip(jobs, decisions, strict=False))
        up = late and await asyncio.to_thread(_up, first.engine)
    except BaseException:  # cancelled: the spans end, the error says so, then it goes on
        _interrupted(jobs, spans, started)
        raise
    finally:
        if token is not None:
            otel_context.detach(token)
    finished = _finish_batch(jobs, spans, decisions, started, up)
    await _alog(list(zip(jobs, finished, strict=True)))
    return finished


def _finish_batch(
    jobs: Sequence[Job],
    spans: Sequence[Span],
    decisions: Sequence[Decision],
    started: float,
    up: bool,
) -> list[Decision]:
    if len(decisions) != len(jobs):
        # An engine that answers a turn with the wrong number of decisions is broken.
        decisions = [
            Decision.failure(ErrorType.ENGINE, "the policy engine answered the turn wrongly")
        ] * len(jobs)
    return [
        _finish(job, span, decision, started, up)
        for job, span, decision in zip(jobs, spans, decisions, strict=True)
    ]


# -- settling, recording, logging ----------------------------------------------------------


def _start(job: Job) -> Span:
    return start_span(job.telemetry, job.engine, job.document, job.parent, job.conversation_id)


def _late(job: Job, decision: Decision) -> bool:
    """A transport failure ``fail_open`` would open: worth asking whether the engine is up
    (a gateway in front of OPA reports a slow evaluation as a 504 or a reset)."""
    return job.rules.fail_open and decision.error in ErrorType.TRANSPORT_FAILURES


def _up(engine: PolicyEngine) -> bool:
    """Whether the engine is up all the same after a :func:`_late` failure (in process, or
    answering its health check): then the policy is only slow (or failing) on this input,
    which the model's arguments can make it, and the failure is not opened."""
    if getattr(engine, "in_process", False):
        return True
    health = getattr(engine, "health", None)
    try:
        return bool(health()) if callable(health) else False
    except Exception:  # noqa: BLE001 - no answer either: it is down
        return False


def _settle(decision: Decision, rules: Rules, tool: str, span: Span, up: bool) -> Decision:
    if decision.allow:
        return rules.rewrite(decision) if rules.rewrite and decision.args is not None else decision
    if decision.error is not None:
        if rules.fail_open and decision.error in ErrorType.TRANSPORT_FAILURES and not up:
            logger.warning(
                "policy engine failed (%s); tool %r is configured to fail open, so the call runs",
                decision.error,
                tool,
            )
            mark_fail_open(span)
            return replace(decision, allow=True)
        return decision
    if rules.shadow is not None and rules.shadow(decision):
        logger.info("shadow mode: tool %r would be denied (%s)", tool, ", ".join(decision.codes))
        beneath = _approvals_beneath(decision)
        if beneath is not None and not rules.shadow(beneath):
            # A deny outranks approvals in the decision; lifting the deny in shadow mode
            # must not lift the approvals it hid: the call waits for a human as before.
            return beneath
        return replace(decision, allow=True, shadowed=True)
    return decision


def _approvals_beneath(decision: Decision) -> Decision | None:
    """The approval a policy's deny also carried (``"approvals": [...]`` beside its
    reasons, as the shipped policy gives it), as a decision of its own."""
    result = decision.result
    approvals = result.get("approvals") if isinstance(result, Mapping) else None
    if not approvals:
        return None
    try:
        found = Decision.from_result(
            {"allow": False, "require_approval": True, "reasons": approvals},
            decision_id=decision.decision_id,
            engine=decision.engine,
            policy=decision.policy,
            revision=decision.revision,
        )
    except EngineError:
        return None
    return replace(found, result=result)


def _finish(job: Job, span: Span, decision: Decision, started: float, up: bool) -> Decision:
    decision = _settle(decision, job.rules, job.tool_label, span, up)
    seconds = time.perf_counter() - started
    record_decision(job.telemetry, span, decision, job.document, seconds, job.tool_label)
    return decision


def _crashed(engine: PolicyEngine) -> Decision:
    logger.exception("policy engine raised; denying the call")
    return engine_crash(engine)


def _interrupted(jobs: Sequence[Job], spans: Sequence[Span], started: float) -> None:
    """End the spans of decisions abandoned mid-way (task cancelled, interpreter exiting):
    an ERROR status with ``error.type=cancelled``, and the metric counts them."""
    engine = jobs[0].engine
    decision = Decision.failure(
        ErrorType.CANCELLED,
        "the decision was cancelled before it was made",
        engine=getattr(engine, "engine_name", ""),
        policy=getattr(engine, "policy", ""),
    )
    seconds = time.perf_counter() - started
    for job, span in zip(jobs, spans, strict=True):
        record_decision(job.telemetry, span, decision, job.document, seconds, job.tool_label)


def _log(job: Job, decision: Decision) -> None:
    if job.rules.log is not None:
        try:
            job.rules.log.write(job.document, decision)
        except Exception as exc:  # noqa: BLE001 - a log that cannot write never breaks the guard
            kind = type(exc).__name__
            logger.error("could not write the decision of %r to the log (%s)", job.tool_label, kind)


async def _alog(entries: Sequence[tuple[Job, Decision]]) -> None:
    """Write decision-log lines from a worker thread: file I/O never runs on the loop."""
    entries = [entry for entry in entries if entry[0].rules.log is not None]

    def write() -> None:
        for job, decision in entries:
            _log(job, decision)

    if entries:
        await asyncio.to_thread(write)


# -- worker threads ------------------------------------------------------------------------


def _io_pool(engine: Any) -> Workers:
    """Threads that wait on a policy server: the calls of a turn go out concurrently. An
    engine with worker threads of its own (``OPAServer.workers``) gets them, so a stalled
    engine never holds up the guards of another."""
    own = getattr(engine, "workers", None)
    return own if isinstance(own, Workers) else shared_workers("io", 32)


def _cpu_pool() -> Workers:
    """Threads for in-process evaluation off the event loop."""
    return shared_workers("cpu", max(2, os.cpu_count() or 2))
