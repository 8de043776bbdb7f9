"""Where a tool runs under ``OPAGuardMiddleware``: a call runs only with its grant.

When the middleware settles a model turn it records, in the agent's private state, a grant
for each call allowed or approved (:func:`grants`: the model message's id, and each call's id
with a digest of its name and arguments). Where the tool runs, :func:`checked_request` finds
the call's grant: a call that changed since the decision is refused (:func:`refused`), and the
tool itself, with every tool an inner middleware could look up by name, is wrapped in a
:class:`CheckedTool` that runs only the call allowed. A call without a grant (added by another
middleware, or whose grant lapsed) is decided where it runs, outside the middleware inside
the guard; :func:`bound_request` then checks its tool the same way, so that what that inner
middleware does to the call after the decision is refused too.

Example:
    ```python
    state[GRANTS_KEY] = grants(message.id, allowed_calls, decided_views_by_id)
    request = checked_request(tool_call_request)  # to run, a refusal, or None
    ```
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from langchain_core.messages import AIMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.prebuilt.tool_node import ToolCallRequest
from pydantic import ConfigDict

from langchain_opa_guard.contract import state_messages
from langchain_opa_guard.guards.claims import decided_turn
from langchain_opa_guard.guards.decided_views import view_digest, view_refusal
from langchain_opa_guard.guards.denials import changed_call_message, guard_answer
from langchain_opa_guard.guards.execution import call_digest
from langchain_opa_guard.guards.injections import executed_injections, without_injected
from langchain_opa_guard.guards.live_turn import fingerprint_holds
from langchain_opa_guard.guards.seals import binding_holds, seal, sealed

__all__ = [
    "GRANTS_KEY",
    "CheckedTool",
    "bound_request",
    "no_tool_answer",
    "digest_of",
    "checked_request",
    "granted_turn",
    "grants",
    "last_ai_message",
    "refused",
]

logger = logging.getLogger(__name__)

GRANTS_KEY = "opa_guard_grants"
"""Private state: the calls of the current turn that may run (id -> digest)."""


def grants(
    message_id: Any,
    calls: Sequence[Mapping[str, Any]],
    config: RunnableConfig | None = None,
    views: Mapping[str, str] | None = None,
    bound: Mapping[str, Any] | None = None,
    before: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The grants of a settled turn: the calls of model message ``message_id`` that may run
    (``config``: the settling task's, which makes the turn's identity for run-once), and
    each one's arguments as the policy decided them (``views``: call id -> ``view_digest``;
    a call without one does not run), and the conversation they were decided on
    (``before``: :func:`.live_turn.fingerprint_of` the turn)."""
    recorded = {
        "message_id": message_id,
        "turn": decided_turn(message_id, config),
        "calls": {c["id"]: digest_of(c) for c in calls},
        "views": {c["id"]: (views or {}).get(c["id"]) for c in calls},
        "binding": dict(bound) if bound is not None else None,
        "before": before,
    }
    recorded["seal"] = seal(GRANTS_KEY, recorded)
    return recorded


def _verified(
    request: ToolCallRequest, scope: str | None, revision: str | None = None
) -> Mapping[str, Any] | None:
    """The request's grants when they carry the guard's seal and were made by the guard of
    ``scope`` for this thread not long ago (a caller can write the agent state with a
    ``Command``): else ``None``, and the calls are decided where they run."""
    state = request.state
    recorded = state.get(GRANTS_KEY) if isinstance(state, Mapping) else None
    if not isinstance(recorded, Mapping):
        return None
    unsealed = {k: v for k, v in recorded.items() if k != "seal"}
    if not sealed(GRANTS_KEY, unsealed, recorded.get("seal")):
        return None
    config = getattr(request.runtime, "config", None)
    scopes = None if scope is None else {scope}
    holds = binding_holds(recorded.get("binding"), config, scopes, revision=revision)
    return recorded if holds else None


def checked_request(
    request: ToolCallRequest, scope: str | None = None, revision: str | None = None
) -> ToolCallRequest | ToolMessage | None:
    """The request to run (its tool checked again where it runs), a refusal, or
    ``None`` when the turn's decision does not cover this call (``scope``: the guard whose
    grants count, see :func:`.seals.guard_scope`; ``revision``: the policy in force now,
    when known)."""
    state = request.state
    recorded = _verified(request, scope, revision)
    message = last_ai_message(state_messages(state))
    call = request.tool_call
    if not isinstance(recorded, Mapping) or message is None:
        return None
    if recorded.get("message_id") != message.id:
        return None
    before = recorded.get("before")
    if isinstance(before, Mapping) and not fingerprint_holds(
        state_messages(state), message.id, before
    ):
        return None  # not the turn decided (moved, rewritten): decided here again
    digest = (recorded.get("calls") or {}).get(call.get("id"))
    if digest is None:
        return None
    if digest != digest_of(call):
        return refused(call)
    view = (recorded.get("views") or {}).get(call.get("id"))
    return _checked(request, call, view)


def bound_request(request: ToolCallRequest) -> ToolCallRequest:
    """A request just allowed where it runs (a call without a grant, decided by the
    middleware's fallback before the middleware inside it runs), checked as a granted call
    is: its tool, and every tool an inner middleware could look up by name, runs only this
    call as its tool reads it now, so that an inner middleware's change after the decision
    (an edit, a rewrite) is refused where the tool runs."""
    if request.tool is None or isinstance(request.tool, CheckedTool):
        return request
    call = request.tool_call
    return _checked(request, call, view_digest(request.tool, call))


def no_tool_answer(request: ToolCallRequest) -> ToolMessage:
    """The answer for a call that reaches the guard with no tool (a name the model made up,
    or a tool a middleware inside the guard supplies at run time, LangChain's dynamically
    registered tools): nothing here can check what would run it, so it does not run. A
    middleware that supplies tools must come before the guard, which then sees them."""
    call = request.tool_call
    tools = getattr(request.runtime, "tools", None) or ()
    names = ", ".join(t.name for t in tools if isinstance(t, BaseTool))
    logger.warning(
        "tool call %r (%s) names no tool of the agent's where OPAGuardMiddleware runs; it did "
        "not run (a middleware that supplies tools at run time goes before the guard)",
        call.get("name"),
        call.get("id"),
    )
    return guard_answer(
        call,
        f'The tool call "{call.get("name")}" did not run: there is no such tool here'
        + (f" (the tools are: {names})." if names else "."),
        "the call names no tool the guard can check where it runs",
    )


def _checked(request: ToolCallRequest, call: ToolCall, view: str | None) -> ToolCallRequest:
    if request.tool is None:
        return request
    # The tool runs with the ToolNode's values for the arguments it injects (a model's
    # value for them is dropped, as the policy never decided it): each checked tool holds
    # the digest of the granted call without them.
    checked = request.override(
        tool=CheckedTool.granted(request.tool, call, view),
        tool_call=without_injected(request.tool, call),
    )
    runtime = checked.runtime
    tools = getattr(runtime, "tools", None)
    if dataclasses.is_dataclass(runtime) and isinstance(tools, list):
        # A middleware inside this one may look a tool up again by name (an edit that
        # switches tools): every tool it can find runs only the call allowed here.
        wrapped = [
            CheckedTool.granted(t, call, view) if isinstance(t, BaseTool) else t for t in tools
        ]
        checked = dataclasses.replace(checked, runtime=dataclasses.replace(runtime, tools=wrapped))
    return checked


class CheckedTool(BaseTool):
    """The tool as the ToolNode runs it: the call must still be the one allowed, and read
    as it did when the policy decided it (``view``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseTool
    digest: str
    view: str | None = None

    @classmethod
    def around(cls, tool: BaseTool, digest: str, view: str | None = None) -> CheckedTool:
        return cls(
            name=tool.name,
            description=tool.description,
            args_schema=tool.args_schema,
            return_direct=tool.return_direct,
            response_format=tool.response_format,
            metadata=tool.metadata,
            tags=tool.tags,
            inner=tool,
            digest=digest,
            view=view,
        )

    @classmethod
    def granted(cls, tool: BaseTool, call: Mapping[str, Any], view: str | None) -> CheckedTool:
        """``tool`` checked to run only ``call`` (a granted call), whatever values the
        ToolNode injects beside the model's arguments."""
        args = call.get("args")
        hidden = executed_injections(tool)
        visible = (
            {k: v for k, v in args.items() if k not in hidden}
            if isinstance(args, Mapping)
            else args
        )
        return cls.around(tool, call_digest(call.get("name"), visible), view)

    def _run(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - invoke delegates
        raise NotImplementedError("the checked tool delegates in invoke()")

    def _visible_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        hidden = executed_injections(self.inner)
        return {k: v for k, v in args.items() if k not in hidden}

    def _refusal(self, input: Any) -> ToolMessage | None:
        if not (isinstance(input, Mapping) and input.get("type") == "tool_call"):
            return None
        args = self._visible_args(input.get("args") or {})
        if call_digest(input.get("name"), args) != self.digest:
            return refused(cast(Any, input))
        if input.get("name") != self.inner.name:  # the granted call handed to another tool
            return refused(cast(Any, input))
        return view_refusal(self.inner, {**input, "args": args}, self.view)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        refusal = self._refusal(input)
        if refusal is not None:
            return refusal
        return self.inner.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        refusal = self._refusal(input)
        if refusal is not None:
            return refusal
        return await self.inner.ainvoke(input, config, **kwargs)


def refused(call: Mapping[str, Any]) -> ToolMessage:
    """The answer for a call that changed after the policy decided it (it does not run)."""
    logger.error(
        "tool call %r (%s) changed after the policy decided it (a middleware after "
        "OPAGuardMiddleware?); it did not run",
        call.get("name"),
        call.get("id"),
    )
    return changed_call_message(call)


def granted_turn(request: ToolCallRequest, scope: str | None = None) -> Any:
    """The decided turn whose grants cover ``request`` (see ``decided_turn``)."""
    recorded = _verified(request, scope)
    return recorded.get("turn") if recorded is not None else None


def digest_of(call: Mapping[str, Any]) -> str:
    """The digest a grant holds for ``call`` (its tool name and arguments)."""
    return call_digest(call.get("name"), call.get("args"))


def last_ai_message(messages: Sequence[Any]) -> AIMessage | None:
    """The latest model message of ``messages``, if any."""
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return message
    return None
