"""The per-call guard behind ``guard_tools``, the ToolNode interceptor and the middleware.

Where the :class:`~langchain_opa_guard.PolicyGuardNode` decides a whole model turn in its own
node, these surfaces decide each call where it is about to run. They build the same input
document, ask the same engine, trace the same ``run_guardrail`` spans, and answer a denied
call with the same ``ToolMessage``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Literal, cast

from langchain_core.messages import AIMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, interrupt
from opentelemetry import context as otel_context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from langchain_opa_guard.approval import APPROVAL_TYPE, read_answers
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
from langchain_opa_guard.decision import Decision
from langchain_opa_guard.decision_log import DecisionLog
from langchain_opa_guard.decision_spans import Rules, ajudge, judge, record_review, shadow_rule
from langchain_opa_guard.denials import DenialStyle, denial_message, rejection_message
from langchain_opa_guard.engine import PolicyEngine
from langchain_opa_guard.telemetry import Telemetry

__all__ = ["ToolCallGuard"]

logger = logging.getLogger(__name__)

Execute = Callable[[ToolCallRequest], ToolMessage | Command[Any]]
AsyncExecute = Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]]


class ToolCallGuard:
    """Check each tool call against the policy right before it runs.

    Use it as a ``ToolNode`` interceptor (it is also what
    :class:`~langchain_opa_guard.OPAGuardMiddleware` and
    :func:`~langchain_opa_guard.guard_tools` use):

    ```python
    from langgraph.prebuilt import ToolNode
    from langchain_opa_guard import EmbeddedPolicy, ToolCallGuard

    guard = ToolCallGuard(EmbeddedPolicy("policies"), registry=tools)
    tool_node = ToolNode(tools, wrap_tool_call=guard.wrap_tool_call,
                         awrap_tool_call=guard.awrap_tool_call)
    ```

    A denied call is answered with a ``ToolMessage`` (``status="error"``, the policy's
    reasons) and its tool never runs. A call the policy sends to a human pauses the graph
    with ``interrupt()`` (approve, reject or edit, as for the guard node).

    Args:
        engine: The policy engine.
        registry: Tools (or name -> metadata) for ``input.tool.metadata``.
        denial_style: ``"full"``, ``"generic"`` or a function of ``(decision, call)``.
        approvals: ``"interrupt"`` or ``"deny"`` for ``require_approval`` decisions.
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
        approvals: Literal["interrupt", "deny"] = "interrupt",
        fail_open: Collection[str] = (),
        shadow: bool | Collection[str] = False,
        decision_log: DecisionLog | None = None,
        user_key: str = "user",
        messages_key: str = "messages",
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        from langchain_opa_guard.guard_node import _metadata_index

        self.engine = engine
        self.metadata_of = _metadata_index(registry)
        self.denial_style = denial_style
        self.approvals = approvals
        self.fail_open = frozenset(fail_open)
        self.shadow = shadow if isinstance(shadow, bool) else frozenset(shadow)
        self.decision_log = decision_log
        self.user_key = user_key
        self.messages_key = messages_key
        self._telemetry = Telemetry(tracer_provider, meter_provider)

    # -- building the input ----------------------------------------------------------------

    def document(
        self, call: Mapping[str, Any], state: Any, config: RunnableConfig, context: Any
    ) -> dict[str, Any]:
        """The policy input for ``call``, with its turn and history read from ``state``."""
        metadata = metadata_for(self.metadata_of, call.get("name"))
        doc = call_document(cast(ToolCall, call), metadata)
        messages = state_messages(state, self.messages_key)
        turn: list[dict[str, Any]] = [doc]
        history: list[dict[str, Any]] = []
        for index in range(len(messages) - 1, -1, -1):
            message = messages[index]
            if isinstance(message, AIMessage) and any(
                c.get("id") == call.get("id") for c in message.tool_calls
            ):
                turn = [
                    doc
                    if c.get("id") == call.get("id")
                    else call_document(c, metadata_for(self.metadata_of, c.get("name")))
                    for c in message.tool_calls
                ]
                history = history_documents(messages[:index], self.metadata_of)
                break
        user = jsonable(subject_from(context, config, self.user_key))
        where = {**where_document(config, context), **task_document(messages, context, config)}
        return policy_input(doc, user, where, turn, history)

    # -- checking one call -------------------------------------------------------------

    def check(
        self, call: Mapping[str, Any], state: Any, config: RunnableConfig, context: Any
    ) -> Decision:
        """Decide one call (inside a ``run_guardrail`` span)."""
        telemetry, parent = self._telemetry_for(config)
        document = self.document(call, state, config, context)
        return judge(
            telemetry,
            self.engine,
            document,
            parent,
            thread_id(config),
            self._label(call),
            self._rules(call),
        )

    async def acheck(
        self, call: Mapping[str, Any], state: Any, config: RunnableConfig, context: Any
    ) -> Decision:
        """Async twin of :meth:`check`."""
        telemetry, parent = self._telemetry_for(config)
        document = self.document(call, state, config, context)
        return await ajudge(
            telemetry,
            self.engine,
            document,
            parent,
            thread_id(config),
            self._label(call),
            self._rules(call),
        )

    # -- the ToolNode / middleware interface ---------------------------------------------

    def wrap_tool_call(
        self, request: ToolCallRequest, execute: Execute
    ) -> ToolMessage | Command[Any]:
        """``ToolNode(wrap_tool_call=...)``: run the call only if the policy allows it."""
        config, context = _runtime_parts(request)
        decision = self.check(request.tool_call, request.state, config, context)
        outcome = self._settle(request, decision, config)
        if isinstance(outcome, ToolMessage):
            return outcome
        if outcome is not None:  # an edited call: the policy decides again
            again = self.check(outcome.tool_call, request.state, config, context)
            if not (again.allow or again.require_approval):
                return denial_message(again, outcome.tool_call, self.denial_style)
            request = outcome
        request, note = _rewrite(request, decision)
        return _noted(execute(request), note)

    async def awrap_tool_call(
        self, request: ToolCallRequest, execute: AsyncExecute
    ) -> ToolMessage | Command[Any]:
        """``ToolNode(awrap_tool_call=...)``: async twin of :meth:`wrap_tool_call`."""
        config, context = _runtime_parts(request)
        decision = await self.acheck(request.tool_call, request.state, config, context)
        outcome = self._settle(request, decision, config)
        if isinstance(outcome, ToolMessage):
            return outcome
        if outcome is not None:
            again = await self.acheck(outcome.tool_call, request.state, config, context)
            if not (again.allow or again.require_approval):
                return denial_message(again, outcome.tool_call, self.denial_style)
            request = outcome
        request, note = _rewrite(request, decision)
        return _noted(await execute(request), note)

    def _settle(
        self, request: ToolCallRequest, decision: Decision, config: RunnableConfig
    ) -> ToolMessage | ToolCallRequest | None:
        """``None``: run as is; a ToolMessage: the answer; a request: run this edited call."""
        call = request.tool_call
        if decision.allow:
            return None
        if not (decision.require_approval and self.approvals == "interrupt"):
            return denial_message(decision, call, self.denial_style)
        call_id = str(call.get("id"))
        response = interrupt(
            {
                "type": APPROVAL_TYPE,
                "requests": [
                    {
                        "tool_call_id": call_id,
                        "name": call.get("name"),
                        "args": call.get("args"),
                        "reasons": list(decision.reasons),
                        "actions": ["approve", "reject", "edit"],
                    }
                ],
            }
        )
        answer = read_answers(response, [call_id])[call_id]
        telemetry, parent = self._telemetry_for(config)
        record_review(telemetry, parent, call, answer.action)
        if answer.action == "approve":
            return None
        if answer.action == "edit" and answer.args is not None:
            edited = cast(ToolCall, {**call, "args": dict(answer.args)})
            return request.override(tool_call=edited)
        return rejection_message(call, answer.reason, self.denial_style)

    # -- helpers -------------------------------------------------------------------------

    def _telemetry_for(
        self, config: RunnableConfig
    ) -> tuple[Telemetry, otel_context.Context | None]:
        return telemetry_in(config) or (self._telemetry, None)

    def _rules(self, call: Mapping[str, Any]) -> Rules:
        name = call.get("name") if isinstance(call.get("name"), str) else ""
        return Rules(
            fail_open=name in self.fail_open,
            shadow=shadow_rule(self.shadow, str(name)),
            log=self.decision_log,
        )

    def _label(self, call: Mapping[str, Any]) -> str:
        return tool_label(call.get("name"), self.metadata_of)


def _rewrite(request: ToolCallRequest, decision: Decision) -> tuple[ToolCallRequest, str | None]:
    """Apply a policy's argument rewrite; the note tells the model which arguments changed."""
    if not decision.allow or decision.shadowed or decision.args is None:
        return request, None
    call = request.tool_call
    old = call.get("args") or {}
    new = dict(decision.args)
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    rewritten = cast(ToolCall, {**call, "args": new})
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
