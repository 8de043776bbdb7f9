"""Enforcement where tools run: a call executes only with an allow for exactly that call.

The guard node decides a turn and hands the ``ToolNode`` the calls it allowed, each with a
*grant*: its id and a digest of its name and arguments. :class:`GuardedToolNode` runs nothing
else. It does not read tool calls from the conversation at all (a model message kept as a
streamed chunk, a provider's ``tool_use`` blocks or ``additional_kwargs`` cannot bring a
denied call back), it refuses input that did not come from the guard (a static edge
``guard -> tools`` or ``agent -> tools`` fails loudly on the first run), and right before each
tool runs it checks that the call still matches its grant (an interceptor that changed the
arguments after the decision is refused).

The same grants protect ``create_agent``: :class:`~langchain_opa_guard.OPAGuardMiddleware`
records them when it decides a turn in ``after_model`` and checks them where the tool runs.

Example:
    ```python
    from langchain_opa_guard import GuardedToolNode, PolicyGuardNode

    tool_node = GuardedToolNode(tools)
    builder.add_node("guard", PolicyGuardNode(engine, registry=tool_node))
    builder.add_node("tools", tool_node)
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from functools import partial
from typing import Any, cast

from langchain_core.messages import AIMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from langchain_opa_guard.guards.claims import arun_once, forget_answers, run_once
from langchain_opa_guard.guards.decided_views import VIEWS_KEY, read_differently, tool_refusal
from langchain_opa_guard.guards.denials import changed_call_message, unsealed_call_message
from langchain_opa_guard.guards.injections import without_injected_request
from langchain_opa_guard.guards.live_turn import turn_still_open
from langchain_opa_guard.guards.seals import GRANT_TTL, binding_holds, sealed
from langchain_opa_guard.guards.tool_results import applied_result
from langchain_opa_guard.guards.tool_start_check import arun_checked, run_checked
from langchain_opa_guard.guards.tools_payload import (
    PAYLOAD_TYPE,
    call_digest,
    calls_payload,
    sealed_part,
    task_groups,
)

__all__ = [
    "GRANT_KEY",
    "PAYLOAD_TYPE",
    "GuardWiringError",
    "GuardedToolNode",
    "call_digest",
    "calls_payload",
    "reads_no_state",
    "task_groups",
]

logger = logging.getLogger(__name__)

GRANT_KEY = "__opa_guard_grant__"
"""Where the tools node keeps the grants of the calls it runs (in ``configurable``)."""

TURN_KEY = "__opa_guard_turn__"
"""Where the tools node keeps the decided turn its calls belong to (:func:`decided_turn`)."""

SHARED_KEY = "__opa_guard_shared__"
"""Set in the tools node's config when its task runs several calls (:func:`task_groups`)."""

UNSEALED_KEY = "__opa_guard_unsealed__"
"""Set in the tools node's config when its payload's seal did not verify (nothing runs)."""

Execute = Callable[[ToolCallRequest], "ToolMessage | Command[Any]"]
AsyncExecute = Callable[[ToolCallRequest], Awaitable["ToolMessage | Command[Any]"]]
Wrapper = Callable[[ToolCallRequest, Execute], "ToolMessage | Command[Any]"]
AsyncWrapper = Callable[[ToolCallRequest, AsyncExecute], Awaitable["ToolMessage | Command[Any]"]]


class GuardWiringError(RuntimeError):
    """The graph can run tools without the guard: fix the wiring (the message says how)."""


def _granted_digest(grant: Mapping[str, Any] | None, call: Mapping[str, Any]) -> str | None:
    """The call's digest when ``grant`` allows exactly ``call``, else ``None``."""
    if not isinstance(grant, Mapping):
        return None
    call_id = call.get("id")
    expected = grant.get(call_id) if isinstance(call_id, str) else None
    if not isinstance(expected, str):
        return None
    digest = call_digest(call.get("name"), call.get("args"))
    return digest if digest == expected else None


class GuardedToolNode(ToolNode):
    """A ``ToolNode`` that runs only the calls a :class:`PolicyGuardNode` allowed.

    It takes the same arguments as ``ToolNode``, and ``grant_ttl``: seconds a grant holds
    after the guard made it (a run paused longer before its tools, or a grant replayed,
    has its calls answered unrun; ``None``: no limit). Its input must be the guard node's
    ``Send``: the allowed calls themselves with their grants, sealed, for this thread.
    Anything else (the graph state through a static edge, a ``Send`` of any other form) raises
    :class:`GuardWiringError` before any tool runs; graph code of yours that writes the
    guard's own payload is trusted as the guard is. Right before a tool runs, the call
    must still match its grant: your own ``wrap_tool_call`` interceptors run outside that
    check, and a call one of them changed is refused with an error ``ToolMessage``.

    Example:
        ```python
        tool_node = GuardedToolNode(tools, handle_tool_errors=True)
        builder.add_node("guard", PolicyGuardNode(engine, registry=tool_node))
        builder.add_node("tools", tool_node)
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        builder.add_edge("tools", "agent")
        ```
    """

    def __init__(
        self,
        tools: Sequence[BaseTool | Callable[..., Any]],
        *,
        wrap_tool_call: Wrapper | None = None,
        awrap_tool_call: AsyncWrapper | None = None,
        grant_ttl: float | None = GRANT_TTL,
        **kwargs: Any,
    ) -> None:
        sync_wrapper, async_wrapper = _compose(
            wrap_tool_call, awrap_tool_call, kwargs.get("messages_key", "messages")
        )
        super().__init__(
            tools, wrap_tool_call=sync_wrapper, awrap_tool_call=async_wrapper, **kwargs
        )
        self.intercepts = wrap_tool_call is not None or awrap_tool_call is not None
        # A subclass may read the state its own way: it counts as reading it.
        self.reads_no_state = type(self) is GuardedToolNode and _reads_no_state(self)
        self._messages_key_for_guard: str = kwargs.get("messages_key", "messages")
        self.grant_ttl = grant_ttl
        # The guards whose hand-overs this node takes (a guard given this node as its
        # registry= adds itself); none known: any guard's, under the seal.
        self.guard_scopes: set[str] | None = None
        self._revisions: dict[str, Callable[[], str | None]] = {}

    def accept_guard(self, scope: str, revision: Callable[[], str | None] | None = None) -> None:
        """Take the hand-overs of the guard of ``scope`` (:func:`.seals.guard_scope`); once
        one is named, those of any other guard (another graph's, a permissive sandbox's)
        grant nothing here. ``revision`` gives that guard's policy revision in force now: a
        grant made under another one (before a reload that may revoke it) grants nothing."""
        self.guard_scopes = {*(self.guard_scopes or ()), scope}
        if revision is not None:
            self._revisions[scope] = revision

    def _revision_now(self, bound: Any) -> str | None:
        scope = bound.get("scope") if isinstance(bound, Mapping) else None
        current = self._revisions.get(scope) if isinstance(scope, str) else None
        return current() if current is not None else None

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        state, config, calls = self._admit(input, config)
        token = _GRANTED_CALLS.set(calls)
        try:
            out = super().invoke(state, config, **kwargs)
        finally:
            _GRANTED_CALLS.reset(token)
        _done(config)
        return out

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        state, config, calls = self._admit(input, config)
        token = _GRANTED_CALLS.set(calls)
        try:
            out = await super().ainvoke(state, config, **kwargs)
        finally:
            _GRANTED_CALLS.reset(token)
        _done(config)
        return out

    def _parse_input(self, input: Any) -> Any:
        """The calls to run: those of the guard's hand-over (the model's message in the
        state the tools read holds the whole turn)."""
        granted = _GRANTED_CALLS.get()
        if granted is not None and isinstance(input, dict):
            # (The state _admit made: no message needs finding to know what runs.)
            return list(granted), "dict"
        tool_calls, input_type = super()._parse_input(input)
        return (list(granted) if granted is not None else tool_calls), input_type

    def _admit(
        self, input: Any, config: RunnableConfig | None
    ) -> tuple[Any, RunnableConfig, list[ToolCall]]:
        """The state the ToolNode runs on (the conversation up to the model's message), its
        config and the calls it runs: only the granted ones."""
        if not (isinstance(input, Mapping) and input.get("__type") == PAYLOAD_TYPE):
            raise GuardWiringError(
                f"the tools node {self.name!r} received input that did not come from the "
                "policy guard, so it runs nothing. Route to it only through PolicyGuardNode "
                "(remove static edges such as 'guard -> tools' or 'agent -> tools')."
            )
        if input.get("stateless") and not self.reads_no_state:
            raise GuardWiringError(
                f"the tools node {self.name!r} reads the graph state (an interceptor, or a "
                "tool that takes the state or a ToolRuntime), but the policy guard sent its "
                "calls without it: pass this same node as the guard's registry=."
            )
        calls = [cast(ToolCall, dict(c)) for c in input.get("calls") or ()]
        if not turn_still_open(
            config,
            self._messages_key_for_guard,
            input.get("message_id"),
            {str(c.get("id")) for c in calls},
            before=input.get("before"),
            contents=input.get("grant") if isinstance(input.get("grant"), Mapping) else None,
        ):
            # Sent back into the run after the conversation went on (the turn was dropped,
            # or answered): LangGraph waits for no answer from it, so nothing of it runs
            # and nothing is answered.
            calls = []
        grant = dict(input.get("grant") or {})
        bound = input.get("binding")
        revision = self._revision_now(bound)
        unsealed = not sealed(
            PAYLOAD_TYPE, sealed_part(input), input.get("seal")
        ) or not binding_holds(bound, config, self.guard_scopes, self.grant_ttl, revision)
        if unsealed:  # forged, or sealed in another process: nothing of it runs
            grant = {}
        # Each call is checked against its grant right before its tool runs (a call without
        # a matching grant is answered there and never runs).
        state = dict(input.get("state") or {})
        messages = list(state.get(self._messages_key_for_guard) or [])
        last = messages[-1] if messages else None
        if not input.get("stateless") and not (
            isinstance(last, AIMessage) and last.id == input.get("message_id")
        ):
            # No conversation: the calls in a message of their own. (A stateless hand-over
            # goes only to a node whose tools read no state, so none reads this message.)
            messages.append(AIMessage(content="", tool_calls=calls, id=input.get("message_id")))
        state[self._messages_key_for_guard] = messages
        base: dict[str, Any] = dict(config or {})
        base["configurable"] = {
            **(base.get("configurable") or {}),
            GRANT_KEY: grant,
            TURN_KEY: input.get("turn"),
            SHARED_KEY: len(calls) > 1,
            UNSEALED_KEY: unsealed,
            VIEWS_KEY: dict(input.get("views") or {}),
        }
        return state, cast(RunnableConfig, base), calls


_GRANTED_CALLS: ContextVar[list[ToolCall] | None] = ContextVar(
    "opa_guard_granted_calls", default=None
)
"""The calls a :class:`GuardedToolNode` runs in the current task (its hand-over's)."""


def _done(config: RunnableConfig) -> None:
    """The task ran all its calls: the answers kept for a retry of it are not needed."""
    configurable = config.get("configurable") or {}
    if configurable.get(SHARED_KEY):
        forget_answers(config, configurable.get(TURN_KEY))


def _shared(request: ToolCallRequest) -> bool:
    config = getattr(request.runtime, "config", None) or {}
    return bool((config.get("configurable") or {}).get(SHARED_KEY))


def _refusal(request: ToolCallRequest) -> ToolMessage:
    call = request.tool_call
    config = getattr(request.runtime, "config", None) or {}
    if (config.get("configurable") or {}).get(UNSEALED_KEY):
        return unsealed_call_message(call)
    logger.error(
        "tool call %r (%s) changed after the policy allowed it; it did not run",
        call.get("name"),
        call.get("id"),
    )
    return changed_call_message(call)


def _turn_of(request: ToolCallRequest) -> Any:
    config = getattr(request.runtime, "config", None) or {}
    return (config.get("configurable") or {}).get(TURN_KEY)


def _grant_of(request: ToolCallRequest) -> Mapping[str, Any] | None:
    config = getattr(request.runtime, "config", None) or {}
    grant = (config.get("configurable") or {}).get(GRANT_KEY)
    return grant if isinstance(grant, Mapping) else None


def _compose(
    user_sync: Wrapper | None, user_async: AsyncWrapper | None, messages_key: str = "messages"
) -> tuple[Wrapper | None, AsyncWrapper | None]:
    """The user's interceptors outside, the grant check innermost (next to execution)."""

    def checked(request: ToolCallRequest, execute: Execute) -> ToolMessage | Command[Any]:
        # Checked here even for a call the node admitted: a tool of the same task that
        # reads the state can reach its siblings' calls and change them in place.
        digest = _granted_digest(_grant_of(request), request.tool_call)
        if digest is None:
            return _refusal(request)
        if (changed := tool_refusal(request) or read_differently(request)) is not None:
            return changed
        # A model's value for an injected argument (undecided) never runs.
        granted = without_injected_request(request)
        run = partial(run_checked, execute, known=(request.tool_call.get("args"), digest))
        result = run_once(granted, run, _turn_of(request), keep=_shared(request))
        return applied_result(granted, result, messages_key)

    async def achecked(
        request: ToolCallRequest, execute: AsyncExecute
    ) -> ToolMessage | Command[Any]:
        digest = _granted_digest(_grant_of(request), request.tool_call)
        if digest is None:
            return _refusal(request)
        if (changed := tool_refusal(request) or read_differently(request)) is not None:
            return changed
        granted = without_injected_request(request)
        arun = partial(arun_checked, execute, known=(request.tool_call.get("args"), digest))
        result = await arun_once(granted, arun, _turn_of(request), keep=_shared(request))
        return applied_result(granted, result, messages_key)

    def sync_wrapper(request: ToolCallRequest, execute: Execute) -> ToolMessage | Command[Any]:
        if user_sync is None:
            return checked(request, execute)
        return user_sync(request, lambda r: checked(r, execute))

    async def async_wrapper(
        request: ToolCallRequest, execute: AsyncExecute
    ) -> ToolMessage | Command[Any]:
        if user_async is None:
            return await achecked(request, execute)
        return await user_async(request, lambda r: achecked(r, execute))

    if user_sync is not None and user_async is None:
        # As ToolNode does: a sync interceptor alone also serves the async path.
        return sync_wrapper, None
    return sync_wrapper, async_wrapper


def reads_no_state(node: Any) -> bool:
    """Whether ``node`` can run its calls without the conversation: a
    :class:`GuardedToolNode` (not a subclass) without interceptors of the user's, whose
    tools take neither the graph state nor a ``ToolRuntime`` (which carries it).

    The guard node then sends each call without a copy of the state, which a checkpointer
    would otherwise store once per call. Anything it cannot tell counts as reading it.
    """
    return isinstance(node, GuardedToolNode) and node.reads_no_state


def _reads_no_state(node: GuardedToolNode) -> bool:
    """:func:`reads_no_state`, worked out once when the node is built (its tools are fixed)."""
    if node.intercepts:
        return False
    try:
        from langgraph.prebuilt.tool_node import _get_all_injected_args

        for tool in node.tools_by_name.values():
            found = _get_all_injected_args(tool)
            if found.state or found.runtime:
                return False
    except Exception:  # noqa: BLE001 - a LangGraph without it: the state may be read
        return False
    return True
