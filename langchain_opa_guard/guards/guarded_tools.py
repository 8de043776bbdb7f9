"""``guard_tools``: plain LangChain tools whose every call is checked by the policy first."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pydantic.v1 as pydantic_v1
from langchain_core.callbacks import Callbacks
from langchain_core.messages import ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.tools import BaseTool, Tool
from pydantic import BaseModel, ConfigDict

from langchain_opa_guard.decision import Decision, ErrorType
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.guards.decided_views import prepared_digest, view_refusal
from langchain_opa_guard.guards.denials import (
    DenialStyle,
    changed_call_message,
    decision_record,
    denial_text,
)
from langchain_opa_guard.guards.injections import injected_fields, toolnode_injections
from langchain_opa_guard.guards.prepared_calls import SINGLE_INPUT, prepared_call
from langchain_opa_guard.guards.rewrites import rewrite_refusal
from langchain_opa_guard.guards.tool_call_guard import ToolCallGuard
from langchain_opa_guard.guards.tool_start_check import (
    ToolStartCheck,
    UncheckedToolRun,
    checking,
    expected_digest,
)

__all__ = ["GuardedTool", "guard_tools"]


def guard_tools(
    tools: Sequence[BaseTool],
    engine: PolicyEngine,
    *,
    denial_style: DenialStyle = "full",
    user_key: str = "user",
    **options: Any,
) -> list[BaseTool]:
    """Wrap tools so that each call is decided by the policy before the tool's body runs.

    The wrapped tools keep their names, descriptions, argument schemas and metadata, so they
    drop into a ``ToolNode``, ``create_agent`` or direct calls. A denied call never runs: in a
    ``ToolNode`` it is answered with a ``ToolMessage`` (``status="error"``) carrying the
    policy's reasons; invoked directly, the tool returns that text. The subject is
    ``context["user"]`` inside a LangGraph run, else ``config["configurable"]["user"]``.

    Plain tools see one call at a time and no conversation, so ``input.turn`` holds only the
    call and ``input.history`` is empty; a policy that needs the history belongs on the guard
    node, the ToolNode interceptor or the middleware. A ``require_approval`` answer is a deny
    here (there is no graph to pause).

    Example:
        ```python
        from langchain_opa_guard import EmbeddedPolicy, guard_tools

        safe_tools = guard_tools(tools, EmbeddedPolicy("policies"))
        agent = create_agent(model, safe_tools)
        safe_tools[0].invoke({"customer_id": "CUST-3"},
                             config={"configurable": {"user": {"role": "guest"}}})
        ```
    """
    tools = list(tools)
    counts = Counter(getattr(tool, "name", None) for tool in tools)
    repeated = sorted(str(name) for name, count in counts.items() if count > 1)
    if repeated:
        # Each wrapper is decided with the metadata found under its name: two tools of one
        # name (an MCP tool named like a local one) would borrow each other's.
        raise ValueError(
            "tools: more than one tool is named " + ", ".join(repeated[:8]) + "; names must "
            "be unique (rename one, or give an MCP server's tools a prefix)"
        )
    guard = ToolCallGuard(
        engine,
        registry=tools,
        denial_style=denial_style,
        approvals="deny",
        user_key=user_key,
        **options,
    )
    return [GuardedTool.wrap(tool, guard) for tool in tools]


class GuardedTool(BaseTool):
    """A tool that asks the policy before delegating to the tool it wraps."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseTool
    guard: ToolCallGuard

    @classmethod
    def wrap(cls, tool: BaseTool, guard: ToolCallGuard) -> GuardedTool:
        return cls(
            name=tool.name,
            description=tool.description,
            args_schema=tool.args_schema,
            return_direct=tool.return_direct,
            response_format=tool.response_format,
            metadata=tool.metadata,
            tags=tool.tags,
            inner=tool,
            guard=guard,
        )

    def _run(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - run() delegates
        raise NotImplementedError("GuardedTool delegates in run()")

    def run(  # type: ignore[override]
        self,
        tool_input: str | dict[str, Any],
        verbose: bool | None = None,
        start_color: str | None = "green",
        color: str | None = "green",
        callbacks: Callbacks = None,
        *,
        config: RunnableConfig | None = None,
        tool_call_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        config = _with_callbacks(config, callbacks)
        call, refusal = self._prepare(tool_input, tool_call_id)
        if refusal is not None:
            return self._denied(refusal, call)
        decision = self.guard.check(call, None, config, _current_context(), self.inner)
        answer, allowed = self._to_run(tool_input, tool_call_id, call, decision)
        if allowed is None:
            return answer
        try:
            with checking(self._start_check(allowed, call)):
                return self.inner.run(
                    allowed,
                    verbose,
                    start_color,
                    color,
                    callbacks,
                    config=config,
                    tool_call_id=tool_call_id,
                    **kwargs,
                )
        except UncheckedToolRun:
            return self._changed(call)

    async def arun(  # type: ignore[override]
        self,
        tool_input: str | dict[str, Any],
        verbose: bool | None = None,
        start_color: str | None = "green",
        color: str | None = "green",
        callbacks: Callbacks = None,
        *,
        config: RunnableConfig | None = None,
        tool_call_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        config = _with_callbacks(config, callbacks)
        call, refusal = self._prepare(tool_input, tool_call_id)
        if refusal is not None:
            return self._denied(refusal, call)
        decision = await self.guard.acheck(call, None, config, _current_context(), self.inner)
        answer, allowed = self._to_run(tool_input, tool_call_id, call, decision)
        if allowed is None:
            return answer
        try:
            with checking(self._start_check(allowed, call)):
                return await self.inner.arun(
                    allowed,
                    verbose,
                    start_color,
                    color,
                    callbacks,
                    config=config,
                    tool_call_id=tool_call_id,
                    **kwargs,
                )
        except UncheckedToolRun:
            return self._changed(call)

    def _to_run(
        self,
        tool_input: str | dict[str, Any],
        tool_call_id: str | None,
        call: ToolCall,
        decision: Decision,
    ) -> tuple[Any, str | dict[str, Any] | None]:
        """What the wrapped tool runs with, as ``(None, input)``; or ``(answer, None)`` for a
        call that does not run (denied, or read differently now than decided)."""
        if not decision.allow:
            return self._denied(decision, call), None
        changed = self._read_differently(tool_input, tool_call_id, call, decision)
        if changed is not None:
            return changed, None
        from_model = tool_call_id is not None
        return None, _as_allowed(self.inner, tool_input, call, decision, from_model=from_model)

    def _prepare(
        self, tool_input: str | dict[str, Any], tool_call_id: str | None
    ) -> tuple[ToolCall, Decision | None]:
        """The call as the tool will read it (through its schema), to decide; or why it
        cannot run."""
        call = self._call(tool_input, tool_call_id)
        view, problem = prepared_call(self.inner, call)
        if problem is None:
            return view, None
        return view, Decision.failure(
            ErrorType.INVALID_CALL, problem, policy=self.guard.engine.policy
        )

    def _read_differently(
        self,
        tool_input: str | dict[str, Any],
        tool_call_id: str | None,
        decided: ToolCall,
        decision: Decision,
    ) -> Any:
        """Right before the wrapped tool runs: the answer for a call it now reads differently
        than the policy decided it (``decided``: the prepared call), else ``None``. A
        policy's rewrite must still read as the policy wrote it."""
        if decision.args is not None and not decision.shadowed:
            rewritten = ToolCall(
                name=self.name, args=dict(decision.args), id=tool_call_id, type="tool_call"
            )
            refusal = rewrite_refusal(self.inner, rewritten)
        else:
            now = self._call(tool_input, tool_call_id)
            refusal = view_refusal(self.inner, now, prepared_digest(self.inner, decided, None))
        if refusal is None or tool_call_id:
            return refusal
        return refusal.content

    def _start_check(self, allowed: str | dict[str, Any], call: ToolCall) -> ToolStartCheck | None:
        """The check of the wrapped tool's start: the arguments it runs with are the ones
        handed to it here (a string input is LangChain's to read, as decided above)."""
        if not isinstance(allowed, dict):
            return None
        named = ToolCall(name=self.inner.name, args=allowed, id=call.get("id"), type="tool_call")
        return ToolStartCheck(named, expected_digest(self.inner, self.inner.name, allowed))

    def _changed(self, call: ToolCall) -> Any:
        answer = changed_call_message(call)
        return answer if call.get("id") else answer.content

    def _call(self, tool_input: str | dict[str, Any], tool_call_id: str | None) -> ToolCall:
        if isinstance(tool_input, dict):
            hidden = injected_fields(self.inner)
            args = {k: v for k, v in tool_input.items() if k not in hidden}
        else:
            # LangChain runs a string input as the tool's first argument: decide it so.
            args = {_first_field(self.inner): tool_input}
        return ToolCall(name=self.name, args=args, id=tool_call_id, type="tool_call")

    def _denied(self, decision: Decision, call: ToolCall) -> Any:
        text = denial_text(decision, call, self.guard.denial_style)
        if call.get("id"):
            return ToolMessage(
                content=text,
                name=self.name,
                tool_call_id=str(call["id"]),
                status="error",
                artifact={"opa_guard": decision_record(decision)},
                response_metadata={"opa_guard": decision_record(decision)},
            )
        return text


def _as_allowed(
    tool: BaseTool,
    tool_input: str | dict[str, Any],
    call: ToolCall,
    decision: Decision,
    *,
    from_model: bool,
) -> str | dict[str, Any]:
    """What the wrapped tool runs with: the model's arguments as they came (the policy
    decided them as the tool will read them; the tool validates them once, itself) or the
    policy's rewrite, plus the values injected beside them, which the model never sees and
    the policy does not decide. For a model's call (it has a call id) those are only what a
    ``ToolNode`` injects (state, store, runtime): a value the model sent for an
    application-supplied ``InjectedToolArg`` is dropped. Called directly by the
    application, the tool keeps every injected argument it was given."""
    rewrite = dict(decision.args) if decision.args is not None and not decision.shadowed else None
    if not isinstance(tool_input, dict):
        if rewrite is not None:
            return rewrite
        # LangChain would validate a string as the schema's first field, then hand it to the
        # function's first parameter, whatever its name: run it as the field decided.
        return {_first_field(tool): tool_input} if _runs_by_field(tool) else tool_input
    hidden = toolnode_injections(tool) if from_model else injected_fields(tool)
    injected = {k: v for k, v in tool_input.items() if k in hidden}
    given = {k: v for k, v in tool_input.items() if k not in injected_fields(tool)}
    return {**injected, **(rewrite if rewrite is not None else given)}


def _runs_by_field(tool: BaseTool) -> bool:
    """Whether a string input is decided, and run, as the first field of a Pydantic schema
    (v2 or v1) the tool validates by name (not a single-input ``Tool``, which hands its one
    value over as it is)."""
    return not isinstance(tool, Tool) and bool(_fields(tool.args_schema))


def _fields(schema: Any) -> list[str]:
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return list(schema.model_fields)
    if isinstance(schema, type) and issubclass(schema, pydantic_v1.BaseModel):
        return list(schema.__fields__)
    return []


def _first_field(tool: BaseTool) -> str:
    """The name a string input is decided under: the first field of the tool's schema
    (LangChain validates the string so); for a single-input ``Tool`` without one, the key
    its single value is decided under; for any other tool without one (it runs with the
    string as its first positional argument) the first argument it shows the model (read
    from its ``_run``), else :data:`~.prepared_calls.SINGLE_INPUT`."""
    fields = _fields(tool.args_schema)
    if fields:
        return fields[0]
    if isinstance(tool, Tool):
        return "input"
    try:
        shown = list(tool.args)
    except Exception:  # noqa: BLE001 - a signature LangChain cannot read
        shown = []
    return str(shown[0]) if shown else SINGLE_INPUT


def _with_callbacks(config: RunnableConfig | None, callbacks: Callbacks) -> RunnableConfig:
    config = ensure_config(config)
    if callbacks is not None and config.get("callbacks") is None:
        config = {**config, "callbacks": callbacks}
    return config


def _current_context() -> Any:
    try:
        from langgraph.runtime import get_runtime

        return get_runtime().context
    except Exception:  # noqa: BLE001 - outside a LangGraph run there is no runtime context
        return None
