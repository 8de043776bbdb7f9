"""The per-call guard behind ``guard_tools``, the ToolNode interceptor and the middleware.

Where the :class:`~langchain_opa_guard.PolicyGuardNode` decides a whole model turn in its own
node, these surfaces decide each call where it is about to run. They build the same input
document, ask the same engine, trace the same ``run_guardrail`` spans, and answer a denied
call with the same ``ToolMessage``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from functools import partial
from typing import Any, Literal, cast

from langchain_core.messages import AIMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from opentelemetry import context as otel_context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

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
from langchain_opa_guard.deciding import Job, Rules, adecide_call, decide_call, shadow_rule
from langchain_opa_guard.decision import Decision, ErrorType
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.guards.arguments import (
    check_choice,
    check_denial_style,
    check_engine,
    check_name,
    check_names,
    check_shadow,
    registry_index,
)
from langchain_opa_guard.guards.claims import (
    CLAIMS,
    arun_once,
    decided_turn,
    run_once,
    task_scope,
)
from langchain_opa_guard.guards.decided_views import prepared_digest, tool_refusal, view_refusal
from langchain_opa_guard.guards.denials import DenialStyle, denial_message
from langchain_opa_guard.guards.injections import without_injected_request
from langchain_opa_guard.guards.live_turn import graph_turn, request_turn_open
from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.guards.rewrites import read_back, rewrite_refusal
from langchain_opa_guard.guards.tool_results import applied_result
from langchain_opa_guard.guards.tool_start_check import arun_checked, run_checked
from langchain_opa_guard.ops.decision_log import DecisionLog
from langchain_opa_guard.tracing.callback_handler import telemetry_in
from langchain_opa_guard.tracing.decision_spans import record_early
from langchain_opa_guard.tracing.telemetry import Telemetry

__all__ = ["ToolCallGuard"]

logger = logging.getLogger(__name__)

Execute = Callable[[ToolCallRequest], ToolMessage | Command[Any]]
AsyncExecute = Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]]


class ToolCallGuard:
    """Check each tool call against the policy right where it is about to run.

    Use it as a ``ToolNode`` interceptor (it is also what ``guard_tools`` and the
    middleware's fallback use):

    ```python
    from langgraph.prebuilt import ToolNode
    from langchain_opa_guard import EmbeddedPolicy, ToolCallGuard

    guard = ToolCallGuard(EmbeddedPolicy("policies"), registry=tools)
    tool_node = ToolNode(tools, wrap_tool_call=guard.wrap_tool_call,
                         awrap_tool_call=guard.awrap_tool_call)
    ```

    The call's arguments go through the tool's own schema first, so the policy decides on
    what will run; a denied call is answered with a ``ToolMessage`` (``status="error"``, the
    policy's reasons) and its tool never runs; a policy's argument rewrite is what runs. Put
    the guard's interceptor last (closest to the tool) when you compose interceptors, so
    the call it decides is the call that runs.

    A ``ToolNode`` runs all the calls of a turn together in one task, so a pause for human
    approval inside it would re-run the turn's other calls on resume. The interceptor
    therefore treats ``require_approval`` as a deny; for approvals use
    :class:`~langchain_opa_guard.PolicyGuardNode` or
    :class:`~langchain_opa_guard.OPAGuardMiddleware`, which ask for all of a turn's
    approvals before anything of the turn runs.

    Args:
        engine: The policy engine.
        registry: Tools (or name -> metadata) for ``input.tool.metadata``.
        denial_style: ``"full"``, ``"generic"`` or a function of ``(decision, call)``.
        approvals: ``"deny"`` (the only mode here; ``"interrupt"`` raises ``ValueError``).
        fail_open: Tools that may run when the engine fails (explicit, logged, traced).
        shadow: Shadow mode (``True``, or tool names and reason codes), as for the node.
        decision_log: Record decisions as JSON lines for replay.
        user_key: Key of the subject in the runtime context or ``configurable``.
        messages_key: State key of the message list (for ``input.turn``/``input.history``).
        tracer_provider, meter_provider: Used when no ``OTelCallbackHandler`` is in the run.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        registry: ToolNode | Sequence[Any] | Mapping[str, Mapping[str, Any]] | None = None,
        denial_style: DenialStyle = "full",
        approvals: Literal["deny"] = "deny",
        fail_open: Collection[str] = (),
        shadow: bool | Collection[str] = False,
        decision_log: DecisionLog | None = None,
        user_key: str = "user",
        messages_key: str = "messages",
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if cast(str, approvals) == "interrupt":
            raise ValueError(
                "approvals='interrupt' is not available in a ToolNode interceptor: the "
                "ToolNode runs all the calls of a turn in one task, so a pause would re-run "
                "the turn's other calls on resume. Use PolicyGuardNode or "
                "OPAGuardMiddleware for human approval, which ask before anything runs."
            )
        check_choice(approvals, "approvals", ("deny",))
        self.engine = check_engine(engine)
        self.metadata_of, self.tools_by_name = registry_index(registry)
        self.denial_style = check_denial_style(denial_style)
        self.approvals = approvals
        self.fail_open = check_names(fail_open, "fail_open")
        self.shadow = check_shadow(shadow)
        if decision_log is not None and not callable(getattr(decision_log, "write", None)):
            raise TypeError("decision_log must be a DecisionLog")
        self.decision_log = decision_log
        self.user_key = check_name(user_key, "user_key")
        self.messages_key = check_name(messages_key, "messages_key")
        self._telemetry = Telemetry(tracer_provider, meter_provider)

    # -- building the input ----------------------------------------------------------------

    def document(
        self, call: Mapping[str, Any], state: Any, config: RunnableConfig, context: Any
    ) -> dict[str, Any]:
        """The policy input for ``call``: its turn and history as the graph holds them."""
        metadata = metadata_for(self.metadata_of, call.get("name"))
        doc = call_document(cast(ToolCall, call), metadata)
        held = graph_turn(call.get("id"), state, config, self.messages_key)
        messages = list(held[0]) if held else state_messages(state, self.messages_key)
        turn: list[dict[str, Any]] = [doc]
        history: list[dict[str, Any]] = []
        found = _turn_of(messages, call.get("id"))
        if found is not None:
            index, message = found
            turn = [
                doc
                if c.get("id") == call.get("id")
                else call_document(c, metadata_for(self.metadata_of, c.get("name")))
                for c in message.tool_calls
            ]
            history = history_documents(messages[:index], self.metadata_of)
        user = jsonable(subject_from(context, config, self.user_key))
        where = {**where_document(config, context), **task_document(messages, context, config)}
        return policy_input(doc, user, where, turn, history)

    # -- checking one call -------------------------------------------------------------

    def check(
        self,
        call: Mapping[str, Any],
        state: Any,
        config: RunnableConfig,
        context: Any,
        tool: BaseTool | None = None,
    ) -> Decision:
        """Decide one call (inside a ``run_guardrail`` span). ``tool`` (else the registry's
        tool of that name) reads a policy's argument rewrite before it may run."""
        return decide_call(self._job(call, state, config, context, tool))

    async def acheck(
        self,
        call: Mapping[str, Any],
        state: Any,
        config: RunnableConfig,
        context: Any,
        tool: BaseTool | None = None,
    ) -> Decision:
        """Async twin of :meth:`check`."""
        return await adecide_call(self._job(call, state, config, context, tool))

    def _job(
        self,
        call: Mapping[str, Any],
        state: Any,
        config: RunnableConfig,
        context: Any,
        tool: BaseTool | None,
    ) -> Job:
        telemetry, parent = self._telemetry_for(config)
        document = self.document(call, state, config, context)
        label = self._label(call)
        rules = self._rules(call, tool)
        return Job(telemetry, self.engine, document, parent, thread_id(config), label, rules)

    # -- the ToolNode / middleware interface ---------------------------------------------

    def wrap_tool_call(
        self, request: ToolCallRequest, execute: Execute
    ) -> ToolMessage | Command[Any]:
        """``ToolNode(wrap_tool_call=...)``: run the call only if the policy allows it."""
        self._learn(request)
        config, context = _runtime_parts(request)
        call, refusal = self._prepare(request, config)
        if refusal is not None:
            return refusal
        decision = self.check(call, request.state, config, context, request.tool)
        if not decision.allow:
            return denial_message(decision, call, self.denial_style)
        turn = self._running_turn(request, config)
        request, note = _as_allowed(request, call, decision)
        if (changed := self._read_differently(request, call, note)) is not None:
            return changed
        result = run_once(request, partial(run_checked, execute), turn, keep=True)
        return _noted(applied_result(request, result, self.messages_key), note)

    async def awrap_tool_call(
        self, request: ToolCallRequest, execute: AsyncExecute
    ) -> ToolMessage | Command[Any]:
        """``ToolNode(awrap_tool_call=...)``: async twin of :meth:`wrap_tool_call`."""
        self._learn(request)
        config, context = _runtime_parts(request)
        call, refusal = self._prepare(request, config)
        if refusal is not None:
            return refusal
        decision = await self.acheck(call, request.state, config, context, request.tool)
        if not decision.allow:
            return denial_message(decision, call, self.denial_style)
        turn = self._running_turn(request, config)
        request, note = _as_allowed(request, call, decision)
        if (changed := self._read_differently(request, call, note)) is not None:
            return changed
        result = await arun_once(request, partial(arun_checked, execute), turn, keep=True)
        return _noted(applied_result(request, result, self.messages_key), note)

    def _read_differently(
        self, request: ToolCallRequest, decided: ToolCall, rewrite: str | None
    ) -> ToolMessage | None:
        """Right before the call runs: the answer for a call its tool now reads differently
        than the policy decided it (``decided``: the prepared call), else ``None``. A policy's
        rewrite (``rewrite`` is its note) must still read as the policy wrote it."""
        if (other := tool_refusal(request)) is not None:
            return other
        tool = request.tool or self.tools_by_name.get(str(decided.get("name")))
        if rewrite is not None:
            return rewrite_refusal(tool, request.tool_call)
        return view_refusal(tool, request.tool_call, prepared_digest(tool, decided, None))

    def _prepare(
        self, request: ToolCallRequest, config: RunnableConfig
    ) -> tuple[ToolCall, ToolMessage | Command[Any] | None]:
        """The call as it would run, or the answer for a call that cannot run at all."""
        call = request.tool_call
        if not request_turn_open(request, self.messages_key):
            return call, Command(update={})  # sent back after its turn left the conversation
        problem: str | None = None
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            problem = "the tool call has no id"
        found = _turn_of(state_messages(request.state, self.messages_key), call_id)
        duplicates = sum(1 for c in found[1].tool_calls if c.get("id") == call_id) if found else 0
        if problem is None and duplicates > 1:
            # One answer per id: the first call under a duplicated id answers for all.
            same = [c for c in found[1].tool_calls if c.get("id") == call_id] if found else []
            position = next((i for i, c in enumerate(same) if c is call), None)
            if position is None:
                # Not the message's own dict (each call in a task of its own): the task
                # that gets here first answers, and answers again whenever LangGraph runs
                # that task again (a retry, a second resume of its checkpoint, a replay),
                # since each of those runs saves its own answers.
                info = getattr(request.runtime, "execution_info", None)
                step = str(getattr(info, "checkpoint_id", "") or "")
                scope = thread_id(config) or step or task_scope(config)
                key = (str(scope), step, str(found[1].id if found else ""), f"dup:{call_id}")
                if not CLAIMS.claim(key, owner=task_scope(config)):
                    return call, Command(update={})
            elif position > 0:
                return call, Command(update={})
            problem = "the tool call id is used by more than one call in this turn"
        if problem is None:
            tool = request.tool or self.tools_by_name.get(str(call.get("name")))
            call, problem = prepared_call(tool, call)
        if problem is None:
            return call, None
        decision = Decision.failure(ErrorType.INVALID_CALL, problem, policy=self.engine.policy)
        telemetry, parent = self._telemetry_for(config)
        record_early(
            telemetry, self.engine, call, decision, parent, thread_id(config), self._label(call)
        )
        return call, denial_message(decision, call, self.denial_style)

    # -- helpers -------------------------------------------------------------------------

    def _running_turn(self, request: ToolCallRequest, config: RunnableConfig) -> str | None:
        """The turn as this task decides it, for run-once: two resumes of one checkpoint
        (a double click on ``interrupt_before=["tools"]``) run the same task and the call
        runs for one of them; a retried task runs again only the calls whose tool raised
        (their claims were released) and answers the others with their kept result."""
        found = _turn_of(
            state_messages(request.state, self.messages_key), request.tool_call.get("id")
        )
        return decided_turn(found[1].id if found else None, config)

    def _learn(self, request: ToolCallRequest) -> None:
        """The ToolNode's own tools: their ``metadata`` for every tool the registry does not
        name (a registry entry wins)."""
        for tool in (request.tool, *(getattr(request.runtime, "tools", None) or ())):
            if isinstance(tool, BaseTool) and tool.name not in self.metadata_of:
                self.metadata_of[tool.name] = dict(tool.metadata or {})

    def _telemetry_for(
        self, config: RunnableConfig
    ) -> tuple[Telemetry, otel_context.Context | None]:
        return telemetry_in(config) or (self._telemetry, None)

    def _rules(self, call: Mapping[str, Any], tool: BaseTool | None) -> Rules:
        name = call.get("name") if isinstance(call.get("name"), str) else ""
        tool = tool or self.tools_by_name.get(str(name))
        return Rules(
            fail_open=name in self.fail_open,
            shadow=shadow_rule(self.shadow, str(name)),
            log=self.decision_log,
            rewrite=partial(read_back, tool) if tool is not None else None,
        )

    def _label(self, call: Mapping[str, Any]) -> str:
        return tool_label(call.get("name"), self.metadata_of)


def _turn_of(messages: Sequence[Any], call_id: Any) -> tuple[int, AIMessage] | None:
    """The latest model turn holding ``call_id`` (ids repeat across turns, not within)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, AIMessage) and any(
            c.get("id") == call_id for c in message.tool_calls
        ):
            return index, message
    return None


def _as_allowed(
    request: ToolCallRequest, call: ToolCall, decision: Decision
) -> tuple[ToolCallRequest, str | None]:
    """The request that runs: the model's call as it came (the policy decided it as the tool
    will read it) without its values for injected arguments, which the policy never saw
    (:func:`without_injected_request`), or the policy's rewrite of it."""
    if decision.shadowed or decision.args is None:
        return without_injected_request(request), None
    old = call.get("args") or {}
    new = dict(decision.args)
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    rewritten = cast(ToolCall, {**request.tool_call, "args": new})
    note = f"[policy: the arguments were adjusted before the call ran: {', '.join(keys) or 'none'}]"
    return request.override(tool_call=rewritten), note


def _noted(result: ToolMessage | Command[Any], note: str | None) -> ToolMessage | Command[Any]:
    if note is None or not isinstance(result, ToolMessage):
        return result
    content = result.content
    if isinstance(content, str):
        return result.model_copy(update={"content": f"{note}\n{content}"})
    return result.model_copy(update={"content": [{"type": "text", "text": note}, *content]})


def _runtime_parts(request: ToolCallRequest) -> tuple[RunnableConfig, Any]:
    runtime = request.runtime
    config = cast(RunnableConfig, getattr(runtime, "config", None) or {})
    return config, getattr(runtime, "context", None)
