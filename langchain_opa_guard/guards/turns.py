"""Deciding a model turn: the logic the guard node and the middleware share.

A :class:`TurnDecider` holds what deciding a turn needs (the engine, the tools and their
metadata, the guard's rules) and takes a turn through its steps:

1. :meth:`~TurnDecider.plan`: the last model turn, each call prepared and given its policy
   input (:mod:`langchain_opa_guard.guards.planning`); a call that cannot be decided is
   denied before the policy is asked.
2. :meth:`~TurnDecider.decide`: the calls with an input go to the engine together
   (:func:`langchain_opa_guard.deciding.decide_calls`).
3. :meth:`~TurnDecider.settle`: each call allowed (a policy's rewrite applied), waiting for a
   human, or denied and answered (repeats of a denied call counted).
4. :meth:`~TurnDecider.review`: on resume after the pause for a human, the reviewer's answers
   applied and the turn decided again (:mod:`langchain_opa_guard.guards.resume`).

:class:`~langchain_opa_guard.PolicyGuardNode` routes the outcome in a graph;
:class:`~langchain_opa_guard.OPAGuardMiddleware` applies it to a ``create_agent`` turn.

Example:
    ```python
    turns = TurnDecider(engine, registry=tools)
    turn = turns.plan(state, config, runtime)
    if turn is not None:
        outcome = turns.settle(turn, turns.decide(turn, config))
    ```
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, cast

from langchain_core.messages import AIMessage, ToolCall
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from opentelemetry import context as otel_context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from langchain_opa_guard.contract import jsonable, subject_from, thread_id, tool_label
from langchain_opa_guard.deciding import (
    Job,
    Rules,
    adecide_calls,
    decide_calls,
    engine_crash,
    shadow_rule,
)
from langchain_opa_guard.decision import Decision
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.guards.approval import ReviewAnswer
from langchain_opa_guard.guards.arguments import (
    check_choice,
    check_denial_style,
    check_engine,
    check_name,
    check_names,
    check_optional_int,
    check_shadow,
    registry_index,
)
from langchain_opa_guard.guards.decided_views import decided_views, planned_views
from langchain_opa_guard.guards.denials import DenialStyle, decision_record, denial_message
from langchain_opa_guard.guards.execution import GuardedToolNode
from langchain_opa_guard.guards.planning import ALREADY_ANSWERED, InputBuilder, Turn, plan_turn
from langchain_opa_guard.guards.prepared_calls import (
    changed_keys,
    message_as_run,
)
from langchain_opa_guard.guards.resume import Rechecks, Reviewed, ask, settle_review, to_recheck
from langchain_opa_guard.guards.rewrites import read_back
from langchain_opa_guard.guards.seals import decided_revision
from langchain_opa_guard.ops.decision_log import DecisionLog
from langchain_opa_guard.tracing.callback_handler import telemetry_in
from langchain_opa_guard.tracing.decision_spans import record_early, record_review
from langchain_opa_guard.tracing.telemetry import Telemetry

__all__ = ["InputBuilder", "Outcome", "ToolRegistry", "Turn", "TurnDecider"]


ToolRegistry = ToolNode | Iterable[BaseTool] | Mapping[str, Mapping[str, Any]]
"""Where the guard finds each tool's ``metadata``: a ToolNode, tools, or name -> metadata."""


_NO_MESSAGE = AIMessage("")
"""Where an outcome's message is not set yet (settling sets it; never changed in place)."""


@dataclass
class Outcome:
    """What becomes of a decided turn's calls.

    Attributes:
        allowed: The calls that run, as they run.
        pending: The calls waiting for a human (checkpointable entries of the ticket).
        answers: The ``ToolMessage`` answering each denied call.
        rewritten: Call id -> the argument names a policy's rewrite changed.
        revision: The policy revision that decided the turn, if known.
        stop: Whether a call was denied too many times: the run ends.
        ai_message: The model's message as its calls run (itself when nothing changed).
        planned: Each call's arguments and view as decided (``planned_views``).
        views: Each allowed call's id -> the view it must still have where it runs.
    """

    allowed: list[ToolCall] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)
    rewritten: dict[str, list[str]] = field(default_factory=dict)
    revision: str | None = None
    stop: bool = False
    ai_message: AIMessage = field(default_factory=lambda: _NO_MESSAGE)
    planned: dict[str, Any] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)


class TurnDecider:
    """Plans, decides, settles and reviews a model turn for a guard.

    The arguments are :class:`~langchain_opa_guard.PolicyGuardNode`'s (``tools`` and
    ``agent`` name the nodes ``input.context`` describes); a wrong type or value raises here,
    with a message naming the argument.

    Raises:
        TypeError, ValueError: For an argument of the wrong type or value; for a plain
            ``ToolNode`` as ``registry``, which would run whatever the state holds.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        tools: str = "tools",
        agent: str = "agent",
        registry: ToolRegistry | None = None,
        build_input: InputBuilder | None = None,
        denial_style: DenialStyle = "full",
        messages_key: str = "messages",
        user_key: str = "user",
        approvals: Literal["interrupt", "deny"] = "interrupt",
        fail_open: Collection[str] = (),
        shadow: bool | Collection[str] = False,
        max_repeated_denials: int | None = 3,
        decision_log: DecisionLog | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if isinstance(registry, ToolNode) and not isinstance(registry, GuardedToolNode):
            raise TypeError(
                "registry is a plain ToolNode, which runs whatever tool calls the state holds; "
                "build the tools node with GuardedToolNode(tools) so only allowed calls run"
            )
        self.engine = check_engine(engine)
        self.tools_node = check_name(tools, "tools")
        self.agent_node = check_name(agent, "agent")
        self.metadata_of, self.tools_by_name = registry_index(registry)
        if build_input is not None and not callable(build_input):
            raise TypeError("build_input must be a function (default_input, call, state) -> input")
        self.build_input = build_input
        self.denial_style = check_denial_style(denial_style)
        self.messages_key = check_name(messages_key, "messages_key")
        self.user_key = check_name(user_key, "user_key")
        self.approvals = check_choice(approvals, "approvals", ("interrupt", "deny"))
        self.fail_open = check_names(fail_open, "fail_open")
        self.shadow = check_shadow(shadow)
        self.max_repeated_denials = check_optional_int(max_repeated_denials, "max_repeated_denials")
        if decision_log is not None and not callable(getattr(decision_log, "write", None)):
            raise TypeError("decision_log must be a DecisionLog")
        self.decision_log = decision_log
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._telemetry_default: Telemetry | None = None

    def learn(self, tool: BaseTool) -> None:
        """Check the arguments of calls to ``tool`` against its schema (unless a tool of that
        name is known already)."""
        self.tools_by_name.setdefault(tool.name, tool)

    def plan(
        self,
        state: Any,
        config: RunnableConfig,
        runtime: Runtime | None,
        kept: Sequence[Mapping[str, Any]] = (),
        request: str | None = None,
    ) -> Turn | None:
        """The last model turn, each call prepared and given its policy input (see
        :func:`~langchain_opa_guard.guards.planning.plan_turn`); ``None`` when the last
        model message has no calls left to decide."""
        return plan_turn(self, state, config, runtime, kept, request)

    # -- deciding --------------------------------------------------------------------------

    def decide(self, turn: Turn, config: RunnableConfig) -> list[Decision]:
        """Ask the engine about the calls of ``turn`` that have a policy input."""
        return decide_calls(self._jobs(turn, config))

    async def adecide(self, turn: Turn, config: RunnableConfig) -> list[Decision]:
        """Async twin of :meth:`decide`."""
        return await adecide_calls(self._jobs(turn, config))

    def _jobs(self, turn: Turn, config: RunnableConfig) -> list[Job]:
        """One evaluation per call still to decide; early denials get their spans now."""
        telemetry, parent = self._telemetry(config)
        conversation_id = thread_id(config)
        jobs = []
        for index, (call, document) in enumerate(zip(turn.calls, turn.inputs, strict=True)):
            label = self._label(call.get("name"))
            early = turn.decisions[index]
            if document is not None:
                rules = self._rules(call.get("name"))
                jobs.append(
                    Job(telemetry, self.engine, document, parent, conversation_id, label, rules)
                )
            elif early is not None and early is not ALREADY_ANSWERED:
                record_early(telemetry, self.engine, call, early, parent, conversation_id, label)
        return jobs

    # -- settling --------------------------------------------------------------------------

    def settle(self, turn: Turn, decided: Sequence[Decision]) -> Outcome:
        """What becomes of each call of a decided turn."""
        results = iter(decided)
        out = Outcome()
        for index, (call, early, document) in enumerate(
            zip(turn.calls, turn.decisions, turn.inputs, strict=True)
        ):
            if early is ALREADY_ANSWERED:
                continue
            decision = early if early is not None else next(results, None)
            if decision is None:
                decision = engine_crash(self.engine)
            out.revision = decided_revision((out.revision, decision.revision))
            if decision.allow:
                if decision.args is not None and not decision.shadowed:
                    new_call = cast(ToolCall, {**call, "args": dict(decision.args)})
                    out.rewritten[str(call.get("id"))] = changed_keys(call, new_call)
                    call = new_call
                out.allowed.append(call)
            elif decision.require_approval and self.approvals == "interrupt":
                out.pending.append(
                    {
                        "call": dict(call),
                        "reasons": list(decision.reasons),
                        "record": decision_record(decision),
                        "document": document,
                    }
                )
            else:
                repeats = turn.repeats[index] if index < len(turn.repeats) else 0
                out.answers.append(denial_message(decision, call, self.denial_style, repeats))
                limit = self.max_repeated_denials
                out.stop = out.stop or (limit is not None and repeats + 1 >= limit)
        out.ai_message = message_as_run(
            turn.ai_message, [*out.allowed, *(p["call"] for p in out.pending)], out.rewritten
        )
        if len(turn.views) != len(turn.calls):
            out.views = self.views_of(out.allowed, None)
            return out
        # A call that runs as planned (the very call decided) keeps the view decided; a
        # rewritten one is read as it will run.
        as_planned = {id(c): v for c, v in zip(turn.calls, turn.views, strict=True)}
        unplanned = [c for c in out.allowed if id(c) not in as_planned]
        out.views = self.views_of(unplanned, None) if unplanned else {}
        for call in out.allowed:
            if id(call) in as_planned:
                out.views[str(call.get("id"))] = as_planned[id(call)]
        return out

    def views_of(
        self, calls: Sequence[Mapping[str, Any]], planned: Mapping[str, Any] | None
    ) -> dict[str, str]:
        """Each call's id -> the view it must still have where it runs: as the policy
        decided it (``planned``), or as it reads now for a call changed since (a rewrite,
        an edit) (see :func:`~langchain_opa_guard.guards.prepared_calls.decided_views`)."""
        return decided_views(calls, planned, self.tools_by_name)

    def ticket_for(self, turn: Turn, out: Outcome) -> dict[str, Any]:
        """What a turn waiting for a reviewer must remember (plain, checkpointable data)."""
        allowed_ids = {str(c.get("id")) for c in out.allowed}
        if not out.planned and len(turn.views) == len(turn.calls):
            out.planned = planned_views(turn.calls, turn.views)
        ticket = {
            "ai_index": turn.ai_index,
            "ai_message": out.ai_message,
            "allowed": [dict(c) for c in out.allowed],
            "pending": out.pending,
            "revision": out.revision,
            "user": turn.user,
            "views": out.planned,
            "documents": {
                str(c.get("id")): d
                for c, d in zip(turn.calls, turn.inputs, strict=True)
                if d is not None and str(c.get("id")) in allowed_ids
            },
        }
        if out.rewritten:
            # A resume decides the calls again as the model proposed them: a rewrite the
            # policy no longer writes must not run from the ticket.
            ticket["proposed"] = {
                str(c.get("id")): dict(c) for c in turn.calls if str(c.get("id")) in out.rewritten
            }
            ticket["proposed_message"] = turn.ai_message
        return ticket

    # -- human review, on resume -----------------------------------------------------------

    def review(
        self, ticket: Mapping[str, Any], config: RunnableConfig, runtime: Runtime | None
    ) -> Reviewed:
        """Ask the reviewer about the turn ``ticket`` holds (the first pass pauses the graph
        here); on resume, decide the turn again and apply the answers."""
        answers, found, jobs = self._resume(ticket, config, runtime)
        decided = dict(zip(found.keys, decide_calls(jobs), strict=True))
        return settle_review(ticket, answers, decided, found.edits, self.denial_style, self.engine)

    async def areview(
        self, ticket: Mapping[str, Any], config: RunnableConfig, runtime: Runtime | None
    ) -> Reviewed:
        """Async twin of :meth:`review`."""
        answers, found, jobs = self._resume(ticket, config, runtime)
        decided = dict(zip(found.keys, await adecide_calls(jobs), strict=True))
        return settle_review(ticket, answers, decided, found.edits, self.denial_style, self.engine)

    def _resume(
        self, ticket: Mapping[str, Any], config: RunnableConfig, runtime: Runtime | None
    ) -> tuple[dict[str, ReviewAnswer], Rechecks, list[Job]]:
        answers = ask(ticket)
        telemetry, parent = self._telemetry(config)
        for item in ticket["pending"]:
            call = item["call"]
            record_review(telemetry, parent, call, answers[str(call.get("id"))].action)
        context = getattr(runtime, "context", None) if runtime is not None else None
        user = jsonable(subject_from(context, config, self.user_key))
        found = to_recheck(ticket, answers, user, self.tools_by_name, self.metadata_of)
        conversation = thread_id(config)
        jobs = [
            Job(
                telemetry,
                self.engine,
                document,
                parent,
                conversation,
                self._label(name),
                self._rules(name),
            )
            for name, document in zip(found.names, found.documents, strict=True)
        ]
        return answers, found, jobs

    # -- helpers -----------------------------------------------------------------------------

    def _telemetry(self, config: RunnableConfig) -> tuple[Telemetry, otel_context.Context | None]:
        found = telemetry_in(config)
        if found is not None:
            return found
        if self._telemetry_default is None:
            self._telemetry_default = Telemetry(self._tracer_provider, self._meter_provider)
        return self._telemetry_default, None

    def _rules(self, name: Any) -> Rules:
        label = name if isinstance(name, str) else ""
        tool = self.tools_by_name.get(label)
        return Rules(
            fail_open=label in self.fail_open,
            shadow=shadow_rule(self.shadow, label),
            log=self.decision_log,
            rewrite=partial(read_back, tool) if tool is not None else None,
        )

    def _label(self, name: Any) -> str:
        return tool_label(name, self.metadata_of)
