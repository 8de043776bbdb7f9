"""``OPAGuardMiddleware``: the guard for LangChain's ``create_agent``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Literal, cast

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from langchain_opa_guard.contract import subject_from
from langchain_opa_guard.decision_log import DecisionLog
from langchain_opa_guard.denials import DenialStyle
from langchain_opa_guard.engine import PolicyEngine
from langchain_opa_guard.tool_call_guard import ToolCallGuard
from langchain_opa_guard.visibility import DEFAULT_VISIBILITY_PATH, avisible_tools, visible_tools

__all__ = ["OPAGuardMiddleware"]


class OPAGuardMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """An ``AgentMiddleware`` that lets a tool call run only when the policy allows it.

    Every tool call of a ``create_agent`` agent is decided in ``wrap_tool_call`` /
    ``awrap_tool_call``: a denied call is answered with a ``ToolMessage`` carrying the
    policy's reasons and never runs; a ``require_approval`` answer pauses the agent with
    ``interrupt()`` for a human (approve, reject or edit; needs a checkpointer).

    With ``visibility=True`` the model is also bound only to the tools the policy's
    ``visible_tools`` lets the subject use (in ``wrap_model_call``); the call-time check
    stays, since visibility is not enforcement.

    Example:
        ```python
        from langchain.agents import create_agent
        from langchain_opa_guard import EmbeddedPolicy, OPAGuardMiddleware

        agent = create_agent(
            model,
            tools,
            middleware=[OPAGuardMiddleware(EmbeddedPolicy("policies"), registry=tools)],
        )
        agent.invoke({"messages": [("user", "Delete CUST-003")]},
                     context={"user": {"id": "user-789", "role": "guest"}})
        ```
    """

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        registry: Sequence[Any] | Mapping[str, Mapping[str, Any]] | None = None,
        denial_style: DenialStyle = "full",
        approvals: Literal["interrupt", "deny"] = "interrupt",
        fail_open: Collection[str] = (),
        shadow: bool | Collection[str] = False,
        decision_log: DecisionLog | None = None,
        user_key: str = "user",
        visibility: bool = False,
        visibility_path: str = DEFAULT_VISIBILITY_PATH,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.visibility = visibility
        self.visibility_path = visibility_path
        self.user_key = user_key
        self.guard = ToolCallGuard(
            engine,
            registry=registry,
            denial_style=denial_style,
            approvals=approvals,
            fail_open=fail_open,
            shadow=shadow,
            decision_log=decision_log,
            user_key=user_key,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )

    def _visible(self, request: ModelRequest) -> ModelRequest:
        if not self.visibility:
            return request
        tools = visible_tools(
            cast(Any, self.engine),
            request.tools,
            user=self._subject(request),
            path=self.visibility_path,
        )
        return request.override(tools=tools)

    async def _avisible(self, request: ModelRequest) -> ModelRequest:
        if not self.visibility:
            return request
        tools = await avisible_tools(
            cast(Any, self.engine),
            request.tools,
            user=self._subject(request),
            path=self.visibility_path,
        )
        return request.override(tools=tools)

    def _subject(self, request: ModelRequest) -> Any:
        runtime = request.runtime
        context = getattr(runtime, "context", None)
        user = subject_from(context, {}, self.user_key)
        if user is None:
            from langgraph.config import get_config

            try:
                user = subject_from(None, get_config(), self.user_key)
            except RuntimeError:
                user = None
        return user

    def wrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], ModelResponse],
    ) -> ModelResponse:
        return handler(self._visible(request))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        return await handler(await self._avisible(request))

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        return self.guard.wrap_tool_call(request, handler)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        return await self.guard.awrap_tool_call(request, handler)
