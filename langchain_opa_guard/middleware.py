"""``OPAGuardMiddleware``: the guard for LangChain's ``create_agent``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Literal

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from langchain_opa_guard.denials import DenialStyle
from langchain_opa_guard.engine import PolicyEngine
from langchain_opa_guard.tool_call_guard import ToolCallGuard

__all__ = ["OPAGuardMiddleware"]


class OPAGuardMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """An ``AgentMiddleware`` that lets a tool call run only when the policy allows it.

    Every tool call of a ``create_agent`` agent is decided in ``wrap_tool_call`` /
    ``awrap_tool_call``: a denied call is answered with a ``ToolMessage`` carrying the
    policy's reasons and never runs; a ``require_approval`` answer pauses the agent with
    ``interrupt()`` for a human (approve, reject or edit; needs a checkpointer).

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
        user_key: str = "user",
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__()
        self.guard = ToolCallGuard(
            engine,
            registry=registry,
            denial_style=denial_style,
            approvals=approvals,
            fail_open=fail_open,
            user_key=user_key,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )

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
