"""The guard node: a LangGraph node between the reasoning node and a ``ToolNode``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import types
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from langchain_core.messages import AIMessage, AnyMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph._internal._runnable import RunnableCallable
from langgraph.constants import END
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from opentelemetry import context as otel_context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from langchain_opa_guard.approval import TICKET_KEY, ReviewAnswer, ask_reviewer
from langchain_opa_guard.arguments import (
    check_choice,
    check_denial_style,
    check_engine,
    check_name,
    check_names,
    check_optional_int,
    check_shadow,
    registry_index,
)
from langchain_opa_guard.callback_handler import telemetry_in
from langchain_opa_guard.contract import (
    call_document,
    history_documents,
    jsonable,
    metadata_for,
    policy_input,
    state_messages,
    subject_from,
    task_document,
    thread_id,
    tool_label,
    where_document,
)
from langchain_opa_guard.decision import Decision, ErrorType
from langchain_opa_guard.decision_log import DecisionLog
from langchain_opa_guard.decision_spans import (
    Rules,
    ajudge,
    ajudge_batch,
    judge,
    judge_batch,
    record_early,
    record_review,
    shadow_rule,
)
from langchain_opa_guard.denials import (
    DenialStyle,
    answer_id,
    decision_record,
    denial_message,
    rejection_message,
    response_message,
    turn_stopped_message,
)
from langchain_opa_guard.engine import PolicyEngine
from langchain_opa_guard.execution import (
    GuardedToolNode,
    calls_payload,
    prepared_call,
    reads_no_state,
)
from langchain_opa_guard.telemetry import Telemetry
from langchain_opa_guard.workers import Workers

__all__ = ["PolicyGuardNode", "InputBuilder", "ToolRegistry"]

logger = logging.getLogger(__name__)

InputBuilder = Callable[[dict[str, Any], ToolCall, Any], Mapping[str, Any]]
"""``(default_input, call, state) -> input``: extend or replace the policy input."""

ToolRegistry = ToolNode | Iterable[BaseTool] | Mapping[str, Mapping[str, Any]]
"""Where the guard finds each tool's ``metadata``: a ToolNode, tools, or name -> metadata."""


@dataclass
class _Turn:
    """One model turn under evaluation."""

    messages: list[AnyMessage]
    ai_index: int
    ai_message: AIMessage
    calls: list[ToolCall]
    inputs: list[dict[str, Any] | None] = field(default_factory=list)
    decisions: list[Decision | None] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)
    user: Any = None


@dataclass
class _Outcome:
    """What becomes of a decided turn's calls."""

    allowed: list[ToolCall] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)
    rewritten: dict[str, list[str]] = field(default_factory=dict)
    revision: str | None = None
    stop: bool = False
    ai_message: AIMessage = field(default_factory=lambda: AIMessage(""))


class PolicyGuardNode(RunnableCallable):
    """A LangGraph node that lets a tool call run only when the policy allows it.

    For every tool call of the last ``AIMessage`` it builds one policy input document (see
    :mod:`langchain_opa_guard.contract`), asks the engine about all the calls of the turn
    together, and then:

    * sends the allowed calls themselves, each with a grant (its id and a digest of its
      arguments), to a :class:`~langchain_opa_guard.GuardedToolNode` in one ``Send``; that
      node runs nothing else, so a denied call can never run, whatever form the model's
      message takes after a checkpoint round trip;
    * answers each denied call with exactly one ``ToolMessage`` (``status="error"``) that
      gives the policy's reasons, so the model can re-plan;
    * asks a human once for all the calls of the turn that need approval, before anything
      of the turn runs (``interrupt()``, answered like LangChain's
      ``HumanInTheLoopMiddleware``; see :mod:`langchain_opa_guard.approval`);
    * goes back to the reasoning node when nothing was allowed.

    Arguments are checked against the tool's own schema before the policy sees them, so
    the policy decides on the arguments that will run (``"5000"`` for an integer field is
    decided and run as ``5000``); a call whose arguments do not validate is denied before
    the policy is asked. Engine failures (OPA down, slow, erroring, undefined or malformed
    output) deny the call: the node never raises into the graph for them.

    The node declares its destinations (``tools`` and ``agent``), so the compiled graph
    draws the guard's edges.

    Args:
        engine: An :class:`~langchain_opa_guard.OPAServer`, an
            :class:`~langchain_opa_guard.EmbeddedPolicy`, or any :class:`PolicyEngine`.
        tools: Name of the ``GuardedToolNode`` node.
        agent: Name of the reasoning node the model's answers come back to.
        registry: The tools (the ``GuardedToolNode``, a list of tools, or a mapping of tool
            name to metadata), so each input carries the tool's ``metadata`` and arguments
            are checked against the tool's schema (not possible with a mapping).
        build_input: ``(default_input, call, state) -> input`` to extend or replace inputs.
        denial_style: ``"full"`` reasons, ``"generic"`` text, or a function of
            ``(decision, call)``, for what the model is told.
        messages_key: State key of the message list.
        user_key: Key of the subject in the runtime context or ``configurable``.
        approvals: What a policy's ``require_approval`` does: ``"interrupt"`` pauses the
            graph for a human (needs a checkpointer), ``"deny"`` treats it as a deny.
        fail_open: Names of tools that may run when the policy engine *fails* (never when
            the policy denies). Off for every tool by default; each use is logged at
            WARNING and traced as ``opa.decision.fail_open``.
        shadow: Shadow mode: ``True`` for every decision, or a collection of tool names
            and reason codes. A shadowed deny is evaluated, logged, traced and counted as
            "would deny", but the call runs. Use it to roll a policy out before enforcing.
        max_repeated_denials: When the model proposes a call (same tool, same arguments)
            that was already denied this many times in the conversation, the guard ends
            the run with a clear message instead of letting the model retry forever
            (each repeat before that gets a firmer denial). ``None`` turns this off.
        decision_log: Record every decision (input, decision, revision) as JSON lines,
            for ``python -m langchain_opa_guard replay``.
        tracer_provider, meter_provider: For decision spans and metrics when no
            :class:`~langchain_opa_guard.OTelCallbackHandler` is in the run's callbacks
            (with one, the handler's providers are used and the decision spans nest in the
            guard node's span). Default: the global providers.
        name: Name of the node's runnable.

    Raises:
        TypeError, ValueError: At construction, for an argument of the wrong type or
            value (the message names it); for a plain ``ToolNode`` as ``registry``, which
            would run whatever the state holds.

    Example:
        ```python
        from langgraph.graph import END, START, MessagesState, StateGraph
        from langgraph.prebuilt import tools_condition

        from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode

        tool_node = GuardedToolNode(tools)
        builder = StateGraph(MessagesState)
        builder.add_node("agent", call_model)
        builder.add_node("guard", PolicyGuardNode(EmbeddedPolicy("policies"), registry=tool_node))
        builder.add_node("tools", tool_node)
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        builder.add_edge("tools", "agent")
        graph = builder.compile()

        graph.invoke(
            {"messages": [("user", "Delete customer CUST-003")]},
            context={"user": {"id": "user-789", "role": "guest"}},
        )
        ```
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
        name: str = "policy_guard",
    ) -> None:
        if isinstance(registry, ToolNode) and not isinstance(registry, GuardedToolNode):
            raise TypeError(
                "registry is a plain ToolNode, which runs whatever tool calls the state holds; "
                "build the tools node with GuardedToolNode(tools) so only allowed calls run"
            )
        super().__init__(self._func, self._afunc, name=check_name(name, "name"), trace=False)
        self.engine = check_engine(engine)
        self.tools_node = check_name(tools, "tools")
        self.agent_node = check_name(agent, "agent")
        self.metadata_of, self.tools_by_name = registry_index(registry)
        # A tools node that never reads the state gets each call without a copy of it.
        self._stateless_sends = reads_no_state(registry)
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
        self._declare_destinations()

    def __repr__(self) -> str:
        return (
            f"PolicyGuardNode({self.engine!r}, tools={self.tools_node!r}, "
            f"agent={self.agent_node!r})"
        )

    # LangGraph reads a node's destinations from the return annotation of ``__call__``;
    # each guard routes to its own two nodes, so each instance carries its own annotation.
    def __call__(self, state: Any) -> Any:  # pragma: no cover - LangGraph calls invoke
        return self.invoke(state)

    def _declare_destinations(self) -> None:
        def __call__(self: PolicyGuardNode, state: Any) -> Any:
            return self.invoke(state)

        __call__.__annotations__ = {
            "return": Command[Literal[self.tools_node, self.agent_node]]  # type: ignore[name-defined]
        }
        self.__dict__["__call__"] = types.MethodType(__call__, self)

    # -- the node's work, sync and async twins ----------------------------------------

    def _func(self, state: Any, config: RunnableConfig, runtime: Runtime) -> Command[Any]:
        ticket = _ticket(state)
        if ticket is not None:
            answers = self._ask(ticket)
            keys, jobs, edits = self._review_jobs(ticket, answers, config, runtime)
            decided = dict(zip(keys, self._run(jobs), strict=True))
            return self._after_review(state, ticket, answers, decided, edits)
        turn = self._plan(state, config, runtime)
        if turn is None:
            return Command(goto=END)
        return self._route(state, turn, self._run(self._jobs(turn, config)), config)

    async def _afunc(self, state: Any, config: RunnableConfig, runtime: Runtime) -> Command[Any]:
        ticket = _ticket(state)
        if ticket is not None:
            answers = self._ask(ticket)
            keys, jobs, edits = self._review_jobs(ticket, answers, config, runtime)
            decided = dict(zip(keys, await self._arun(jobs), strict=True))
            return self._after_review(state, ticket, answers, decided, edits)
        turn = self._plan(state, config, runtime)
        if turn is None:
            return Command(goto=END)
        return self._route(state, turn, await self._arun(self._jobs(turn, config)), config)

    def _run(self, jobs: list[_Job]) -> list[Decision]:
        """Decide a turn: in one round trip when the engine batches, concurrently over
        the network otherwise, in order in process."""
        if len(jobs) > 1 and getattr(self.engine, "batches", False):
            return judge_batch(*_batch_args(jobs))
        if len(jobs) > 1 and not getattr(self.engine, "in_process", False):
            return _io_pool(self.engine).map(_run_job, jobs)
        return [_run_job(job) for job in jobs]

    async def _arun(self, jobs: list[_Job]) -> list[Decision]:
        if not jobs:
            return []
        if len(jobs) > 1 and getattr(self.engine, "batches", False):
            return await ajudge_batch(*_batch_args(jobs))
        if getattr(self.engine, "in_process", False):
            return await _cpu_pool().run(lambda: [_run_job(j) for j in jobs])
        if len(jobs) == 1:
            return [await _arun_job(jobs[0])]
        return list(await asyncio.gather(*(_arun_job(job) for job in jobs)))

    def _jobs(self, turn: _Turn, config: RunnableConfig) -> list[_Job]:
        """One evaluation per call still to decide; early denials get their spans now."""
        telemetry, parent = self._telemetry(config)
        conversation_id = thread_id(config)
        jobs = []
        for index, (call, document) in enumerate(zip(turn.calls, turn.inputs, strict=True)):
            label = self._tool_label(call.get("name"))
            early = turn.decisions[index]
            if document is not None:
                rules = self._rules(call.get("name"))
                jobs.append(
                    _Job(telemetry, self.engine, document, parent, conversation_id, label, rules)
                )
            elif early is not None and early is not _ALREADY_ANSWERED:
                record_early(telemetry, self.engine, call, early, parent, conversation_id, label)
        return jobs

    def _telemetry(self, config: RunnableConfig) -> tuple[Telemetry, otel_context.Context | None]:
        found = telemetry_in(config)
        if found is not None:
            return found
        if self._telemetry_default is None:
            self._telemetry_default = Telemetry(self._tracer_provider, self._meter_provider)
        return self._telemetry_default, None

    def _rules(self, name: Any) -> Rules:
        tool = name if isinstance(name, str) else ""
        return Rules(
            fail_open=tool in self.fail_open,
            shadow=shadow_rule(self.shadow, tool),
            log=self.decision_log,
        )

    def _tool_label(self, name: Any) -> str:
        return tool_label(name, self.metadata_of)

    # -- shared logic -----------------------------------------------------------------

    def _plan(
        self,
        state: Any,
        config: RunnableConfig,
        runtime: Runtime | None,
        kept: Sequence[Mapping[str, Any]] = (),
    ) -> _Turn | None:
        """The last model turn, each call prepared and given its policy input.

        ``kept`` holds history entries recorded when earlier turns were decided; those whose
        calls are no longer in the messages (a middleware summarised them away) come first
        in ``input.history``, so dropping messages never drops what ran.
        """
        messages = state_messages(state, self.messages_key)
        for index in range(len(messages) - 1, -1, -1):
            message = messages[index]
            if isinstance(message, AIMessage):
                break
            if not isinstance(message, ToolMessage):
                return None
        else:
            return None
        if not message.tool_calls:
            return None
        turn = _Turn(list(messages), index, message, list(message.tool_calls))
        answered = {m.tool_call_id for m in messages[index + 1 :] if isinstance(m, ToolMessage)}

        context = getattr(runtime, "context", None) if runtime is not None else None
        user = subject_from(context, config, self.user_key)
        where_doc = where_document(config, context, agent=self.agent_node, tools=self.tools_node)
        # Each call as it would run: its arguments through the tool's own schema.
        problems: list[str | None] = []
        for position, call in enumerate(turn.calls):
            tool = (
                self.tools_by_name.get(call.get("name"))
                if isinstance(call.get("name"), str)
                else None
            )
            prepared, problem = prepared_call(tool, call)
            turn.calls[position] = prepared
            problems.append(problem)
        where_doc.update(task_document(messages[:index], context, config))
        docs = [call_document(c, metadata_for(self.metadata_of, c.get("name"))) for c in turn.calls]
        history = history_documents(messages[:index], self.metadata_of)
        if kept:
            present = {_entry_key(h) for h in history}
            history = [*(dict(h) for h in kept if _entry_key(h) not in present), *history]
        user_doc = jsonable(user)
        turn.user = user_doc
        denied_before: dict[str, int] = {}
        for entry in history:
            if entry.get("decision") == "deny":
                key = _call_key(entry.get("name"), entry.get("args"))
                denied_before[key] = denied_before.get(key, 0) + 1
        turn.repeats = (
            [denied_before.get(_call_key(d["name"], d["args"]), 0) for d in docs]
            if denied_before
            else [0] * len(docs)
        )
        # The id each call's answer would carry: one answer per id.
        keys = [answer_id(call) for call in turn.calls]
        seen = Counter(keys)
        first_seen: set[str] = set()
        for call, doc, problem, key in zip(turn.calls, docs, problems, keys, strict=True):
            if key in answered or key in first_seen:
                # Answered already, or a second call under an id the first one answers:
                # one answer per id, and nothing of a duplicated id runs.
                turn.inputs.append(None)
                turn.decisions.append(_ALREADY_ANSWERED)
                continue
            first_seen.add(key)
            problem = _invalid_call(call, seen) or problem
            if problem is not None:
                turn.inputs.append(None)
                turn.decisions.append(
                    Decision.failure(ErrorType.INVALID_CALL, problem, policy=self.engine.policy)
                )
                continue
            document = policy_input(doc, user_doc, where_doc, docs, history)
            if self.build_input is not None:
                try:
                    document = dict(self.build_input(document, call, state))
                except Exception:
                    logger.exception("build_input raised; denying the call")
                    turn.inputs.append(None)
                    turn.decisions.append(
                        Decision.failure(
                            ErrorType.INPUT,
                            "the policy input could not be built",
                            policy=self.engine.policy,
                        )
                    )
                    continue
            turn.inputs.append(document)
            turn.decisions.append(None)
        return turn

    def _settle(self, turn: _Turn, decided: Sequence[Decision]) -> _Outcome:
        """What becomes of each call of a decided turn."""
        results = iter(decided)
        out = _Outcome()
        for index, (call, early, document) in enumerate(
            zip(turn.calls, turn.decisions, turn.inputs, strict=True)
        ):
            if early is _ALREADY_ANSWERED:
                continue
            decision = early if early is not None else next(results, None)
            if decision is None:
                decision = self._engine_crash()
            out.revision = out.revision or decision.revision
            if decision.allow:
                if decision.args is not None and not decision.shadowed:
                    new_call = cast(ToolCall, {**call, "args": dict(decision.args)})
                    out.rewritten[str(call.get("id"))] = _changed_keys(call, new_call)
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
        out.ai_message = _as_run(
            turn.ai_message, [*out.allowed, *(p["call"] for p in out.pending)], out.rewritten
        )
        return out

    def _ticket_for(self, turn: _Turn, out: _Outcome) -> dict[str, Any]:
        """What a turn waiting for a reviewer must remember (plain, checkpointable data)."""
        allowed_ids = {str(c.get("id")) for c in out.allowed}
        return {
            "ai_index": turn.ai_index,
            "ai_message": out.ai_message,
            "allowed": [dict(c) for c in out.allowed],
            "pending": out.pending,
            "revision": out.revision,
            "user": turn.user,
            "documents": {
                str(c.get("id")): d
                for c, d in zip(turn.calls, turn.inputs, strict=True)
                if d is not None and str(c.get("id")) in allowed_ids
            },
        }

    def _route(
        self, state: Any, turn: _Turn, decided: Sequence[Decision], config: RunnableConfig
    ) -> Command[Any]:
        out = self._settle(turn, decided)
        messages_update: list[Any] = []
        if out.ai_message is not turn.ai_message:
            messages_update.append(out.ai_message)
        if out.stop:
            return self._stop_turn(turn, out.allowed, out.pending, messages_update + out.answers)
        messages_update += out.answers
        update = {self.messages_key: messages_update} if messages_update else None
        if out.pending:
            payload = _with_messages(state, self.messages_key, turn.messages)
            payload[TICKET_KEY] = self._ticket_for(turn, out)
            here = (config.get("metadata") or {}).get("langgraph_node") or "guard"
            return Command(update=update, goto=Send(str(here), payload))
        earlier = turn.messages[: turn.ai_index]
        return self._to_tools(state, earlier, out.ai_message, out.allowed, update)

    def _to_tools(
        self,
        state: Any,
        earlier: Sequence[AnyMessage],
        ai_message: AIMessage,
        allowed: Sequence[ToolCall],
        update: dict[str, Any] | None,
    ) -> Command[Any]:
        """The allowed calls themselves, each with its grant, to the tools node; else back."""
        if not allowed:
            return Command(update=update, goto=self.agent_node)
        if self._stateless_sends:
            state, earlier = {}, ()
        elif isinstance(state, Mapping):
            state = {k: v for k, v in state.items() if k != TICKET_KEY}
        # One task per call: a task LangGraph runs again (a retry policy, an interrupt()
        # inside a tool, a resume) runs that call again, never its neighbours, whose
        # results are already saved.
        sends = [
            Send(
                self.tools_node,
                calls_payload([call], state, self.messages_key, earlier, ai_message),
            )
            for call in allowed
        ]
        return Command(update=update, goto=sends)

    def _stop_turn(
        self,
        turn: _Turn,
        allowed: Sequence[ToolCall],
        pending: Sequence[Mapping[str, Any]],
        replies: list[Any],
    ) -> Command[Any]:
        """End the run: the model keeps proposing a call the policy keeps denying."""
        for call in [*allowed, *(cast(ToolCall, p["call"]) for p in pending)]:
            replies.append(turn_stopped_message(call))
        replies.append(
            AIMessage(
                "I stopped here: I kept proposing a tool call that the policy denies "
                f"({self.max_repeated_denials} times), so retrying will not help. "
                "Please change the request or ask an administrator about the policy."
            )
        )
        return Command(update={self.messages_key: replies}, goto=END)

    # -- human approval ---------------------------------------------------------------

    def _ask(self, ticket: Mapping[str, Any]) -> dict[str, ReviewAnswer]:
        """Pause the graph for a reviewer; on resume, their answer per waiting call id."""
        pending = ticket["pending"]
        answers = ask_reviewer(pending)
        return {str(p["call"].get("id")): a for p, a in zip(pending, answers, strict=True)}

    def _review_jobs(
        self,
        ticket: Mapping[str, Any],
        answers: Mapping[str, ReviewAnswer],
        config: RunnableConfig,
        runtime: Runtime | None,
    ) -> tuple[list[str], list[_Job], dict[str, tuple[ToolCall, str | None]]]:
        """What must be decided again on resume, keyed ``"edit:<id>"`` / ``"recheck:<id>"``.

        Edited calls go through the tool's schema and back to the policy with their new
        arguments; every other call of the turn is decided again under the policy and the
        subject in force now.
        """
        telemetry, parent = self._telemetry(config)
        conversation = thread_id(config)
        context = getattr(runtime, "context", None) if runtime is not None else None
        user = jsonable(subject_from(context, config, self.user_key))
        # Every call of the turn is decided again under the policy and subject in force
        # now: an approval is never honoured for a call the policy has since denied, even
        # where nothing announces the change (OPA's Data API, a bundle without revision).
        changed = True
        keys: list[str] = []
        jobs: list[_Job] = []
        edits: dict[str, tuple[ToolCall, str | None]] = {}

        def add(key: str, call: Mapping[str, Any], document: Mapping[str, Any] | None) -> None:
            if not document:
                return
            document = {**document, "user": user}
            label = self._tool_label(call.get("name"))
            keys.append(key)
            jobs.append(
                _Job(
                    telemetry,
                    self.engine,
                    document,
                    parent,
                    conversation,
                    label,
                    self._rules(call.get("name")),
                )
            )

        for item in ticket["pending"]:
            call = item["call"]
            call_id = str(call.get("id"))
            answer = answers[call_id]
            record_review(telemetry, parent, call, answer.action)
            document = item["document"]
            if answer.action == "edit" and answer.args is not None and document:
                tool = self.tools_by_name.get(call.get("name"))
                edited, problem = prepared_call(
                    tool, cast(ToolCall, {**call, "args": dict(answer.args)})
                )
                edits[call_id] = (edited, problem)
                if problem is None:
                    doc = call_document(edited, metadata_for(self.metadata_of, call.get("name")))
                    turn = [
                        doc if t.get("call_id") == doc["call_id"] else t for t in document["turn"]
                    ]
                    add(f"edit:{call_id}", call, {**document, "tool": doc, "turn": turn})
            elif changed:
                add(f"recheck:{call_id}", call, document)
        if changed:
            for call in ticket["allowed"]:
                document = ticket.get("documents", {}).get(str(call.get("id")))
                add(f"recheck:{call.get('id')}", call, document)
        return keys, jobs, edits

    def _settle_review(
        self,
        ticket: Mapping[str, Any],
        answers: Mapping[str, ReviewAnswer],
        decided: Mapping[str, Decision],
        edits: Mapping[str, tuple[ToolCall, str | None]],
    ) -> tuple[list[ToolCall], list[Any], AIMessage]:
        """``(calls that run, answers for the others, the model's message as it runs)``."""
        allowed: list[ToolCall] = []
        replies: list[Any] = []
        rewritten: dict[str, list[str]] = {}
        for raw in ticket["allowed"]:
            call = cast(ToolCall, raw)
            again = decided.get(f"recheck:{call.get('id')}")
            if again is None or again.allow:
                allowed.append(call)
            else:  # the policy or the subject changed while the graph waited
                replies.append(denial_message(again, call, self.denial_style))
        for item in ticket["pending"]:
            call = cast(ToolCall, item["call"])
            call_id = str(call.get("id"))
            answer = answers[call_id]
            again = decided.get(f"recheck:{call_id}")
            if again is not None and not (again.allow or again.require_approval):
                replies.append(denial_message(again, call, self.denial_style))
            elif answer.action == "approve":
                allowed.append(call)
            elif answer.action == "edit" and call_id in edits:
                edited, problem = edits[call_id]
                if problem is not None:
                    failure = Decision.failure(ErrorType.INVALID_CALL, problem)
                    replies.append(denial_message(failure, edited, self.denial_style))
                    continue
                decision = decided.get(f"edit:{call_id}") or self._engine_crash()
                if not (decision.allow or decision.require_approval):
                    replies.append(denial_message(decision, edited, self.denial_style))
                    continue
                if decision.allow and decision.args is not None and not decision.shadowed:
                    # The policy's rewrite of the edited arguments is what runs.
                    edited = cast(ToolCall, {**edited, "args": dict(decision.args)})
                    rewritten[call_id] = _changed_keys(call, edited)
                allowed.append(edited)
            elif answer.action == "respond":
                replies.append(response_message(call, answer.reason or ""))
            else:
                replies.append(rejection_message(call, answer.reason, self.denial_style))
        ai_message: AIMessage = ticket["ai_message"]
        ran = {str(c.get("id")): c for c in allowed}
        shown = [ran.get(str(c.get("id")), c) for c in ai_message.tool_calls]
        return allowed, replies, _as_run(ai_message, shown, rewritten)

    def _after_review(
        self,
        state: Any,
        ticket: Mapping[str, Any],
        answers: Mapping[str, ReviewAnswer],
        decided: Mapping[str, Decision],
        edits: Mapping[str, tuple[ToolCall, str | None]],
    ) -> Command[Any]:
        allowed, replies, updated = self._settle_review(ticket, answers, decided, edits)
        if updated is not ticket["ai_message"]:
            replies.insert(0, updated)
        update = {self.messages_key: replies} if replies else None
        earlier = state_messages(state, self.messages_key)[: ticket["ai_index"]]
        return self._to_tools(state, earlier, updated, allowed, update)

    def _engine_crash(self) -> Decision:
        return Decision.failure(
            ErrorType.ENGINE,
            "the policy engine raised an error",
            engine=getattr(self.engine, "engine_name", ""),
            policy=getattr(self.engine, "policy", ""),
        )


_ALREADY_ANSWERED = Decision(False, ("already answered",))


@dataclass(frozen=True)
class _Job:
    telemetry: Telemetry
    engine: PolicyEngine
    document: dict[str, Any]
    parent: otel_context.Context | None
    conversation_id: str | None
    tool_label: str
    rules: Rules = field(default_factory=Rules)


def _batch_args(jobs: list[_Job]) -> tuple[Any, ...]:
    first = jobs[0]
    return (
        first.telemetry,
        first.engine,
        [j.document for j in jobs],
        first.parent,
        first.conversation_id,
        [j.tool_label for j in jobs],
        [j.rules for j in jobs],
    )


def _run_job(job: _Job) -> Decision:
    return judge(
        job.telemetry,
        job.engine,
        job.document,
        job.parent,
        job.conversation_id,
        job.tool_label,
        job.rules,
    )


async def _arun_job(job: _Job) -> Decision:
    return await ajudge(
        job.telemetry,
        job.engine,
        job.document,
        job.parent,
        job.conversation_id,
        job.tool_label,
        job.rules,
    )


_pools: dict[str, Workers] = {}
_pools_lock = threading.Lock()


def _pool(kind: str, workers: int) -> Workers:
    """A pool shared by the guards of this process: bounded, fork-safe (a forked child
    starts threads of its own), and carrying the caller's context (trace, LangGraph config)
    into its threads."""
    pool = _pools.get(kind)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(kind)
            if pool is None:
                pool = Workers(workers, f"opa-guard-{kind}")
                _pools[kind] = pool
    return pool


def _io_pool(engine: Any) -> Workers:
    """Threads that wait on a policy server: the calls of a turn go out concurrently. An
    engine with worker threads of its own (``OPAServer.workers``) gets them, so a stalled
    engine never holds up the guards of another."""
    own = getattr(engine, "workers", None)
    return own if isinstance(own, Workers) else _pool("io", 32)


def _cpu_pool() -> Workers:
    """Threads for in-process evaluation off the event loop."""
    return _pool("cpu", max(2, os.cpu_count() or 2))


def _entry_key(entry: Mapping[str, Any]) -> str:
    return json.dumps(
        [entry.get("call_id"), entry.get("name"), entry.get("args")], sort_keys=True, default=str
    )


def _call_key(name: Any, args: Any) -> str:
    return json.dumps([name, args], sort_keys=True, default=str)


def _changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    old, new = before.get("args") or {}, after.get("args") or {}
    return sorted(k for k in set(old) | set(new) if old.get(k, _MISSING) != new.get(k, _MISSING))


_MISSING = object()


def _as_run(
    message: AIMessage, calls: Sequence[Mapping[str, Any]], rewritten: Mapping[str, list[str]]
) -> AIMessage:
    """The model's message as its calls will run, or ``message`` itself when nothing changed.

    A changed message is rebuilt as a plain ``AIMessage`` (same id, so it replaces the
    original in the state): a streamed chunk or raw provider tool calls in
    ``additional_kwargs`` would bring the model's arguments back after a checkpoint round
    trip. A policy's argument rewrite leaves a note for the model.
    """
    by_id = {str(c.get("id")): c for c in calls}
    new_calls = [by_id.get(str(c.get("id")), c) for c in message.tool_calls]
    if not rewritten and all(
        a.get("args") == b.get("args") for a, b in zip(new_calls, message.tool_calls, strict=True)
    ):
        return message
    content: Any = message.content
    if isinstance(content, list):
        content = [
            b
            for b in content
            if not (isinstance(b, Mapping) and b.get("type") in ("tool_use", "tool_call"))
        ]
    if rewritten:
        notes = "\n".join(
            f"[policy: the arguments of {by_id[call_id].get('name')} ({call_id}) were "
            f"adjusted: {', '.join(keys) or 'none'}]"
            for call_id, keys in rewritten.items()
        )
        if isinstance(content, str):
            content = f"{content}\n{notes}" if content else notes
        else:
            content = [*content, {"type": "text", "text": notes}]
    extra = {
        k: v
        for k, v in message.additional_kwargs.items()
        if k not in ("tool_calls", "function_call")
    }
    tool_calls = [
        {**c, "args": dict(c["args"])} if isinstance(c.get("args"), Mapping) else dict(c)
        for c in new_calls
    ]
    try:
        return AIMessage(
            content=content,
            tool_calls=tool_calls,
            invalid_tool_calls=list(message.invalid_tool_calls),
            additional_kwargs=extra,
            response_metadata=dict(message.response_metadata),
            usage_metadata=message.usage_metadata,
            id=message.id,
            name=message.name,
        )
    except (ValueError, TypeError, KeyError):
        # Malformed calls (denied anyway) cannot make a valid message; the calls that run
        # travel on their own, so the history keeps the model's message as it was.
        return message


def _ticket(state: Any) -> Mapping[str, Any] | None:
    if isinstance(state, Mapping):
        ticket = state.get(TICKET_KEY)
        if isinstance(ticket, Mapping):
            return ticket
    return None


def _with_messages(state: Any, key: str, messages: list[AnyMessage]) -> dict[str, Any]:
    if isinstance(state, Mapping):
        return {**state, key: messages}
    return {key: messages}


def _invalid_call(call: ToolCall, seen: Mapping[str, int]) -> str | None:
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        return "the tool call has no id"
    if seen.get(call_id, 0) > 1:
        return "the tool call id is used by more than one call in this turn"
    if not isinstance(call.get("name"), str) or not call.get("name"):
        return "the tool call has no tool name"
    if not isinstance(call.get("args"), Mapping):
        return "the tool call's arguments are not an object"
    return None
