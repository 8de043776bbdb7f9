"""Zero-trust tool execution for LangChain and LangGraph agents, decided by Open Policy Agent.

Example:
    ```python
    from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode

    tool_node = GuardedToolNode(tools)
    builder.add_node("guard", PolicyGuardNode(EmbeddedPolicy("policies"), registry=tool_node))
    builder.add_node("tools", tool_node)
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    ```
"""

from langchain_opa_guard.contract import CONTRACT_VERSION
from langchain_opa_guard.decision import Decision, EngineError, ErrorType
from langchain_opa_guard.engines.embedded import EmbeddedPolicy
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.engines.policy_sources import PolicyNotFoundError
from langchain_opa_guard.engines.server.opa_server import OPAServer
from langchain_opa_guard.guards.execution import GuardedToolNode, GuardWiringError
from langchain_opa_guard.guards.guard_node import PolicyGuardNode
from langchain_opa_guard.guards.guarded_tools import GuardedTool, guard_tools
from langchain_opa_guard.guards.mcp import definition_digest, mcp_pins, mcp_tools, with_mcp_metadata
from langchain_opa_guard.guards.open_calls import answer_open_calls
from langchain_opa_guard.guards.tool_call_guard import ToolCallGuard
from langchain_opa_guard.guards.visibility import avisible_tools, visible_tools
from langchain_opa_guard.ops.decision_log import DecisionLog
from langchain_opa_guard.tracing.callback_handler import OTelCallbackHandler
from langchain_opa_guard.tracing.setup import TracingSetup, configure_tracing
from langchain_opa_guard.tracing.span_tree import format_span_tree
from langchain_opa_guard.version import __version__ as __version__

__all__ = [
    "CONTRACT_VERSION",
    "Decision",
    "DecisionLog",
    "EmbeddedPolicy",
    "EngineError",
    "ErrorType",
    "GuardWiringError",
    "GuardedTool",
    "GuardedToolNode",
    "OPAGuardMiddleware",
    "OPAServer",
    "OTelCallbackHandler",
    "PolicyEngine",
    "PolicyGuardNode",
    "PolicyNotFoundError",
    "ToolCallGuard",
    "TracingSetup",
    "answer_open_calls",
    "avisible_tools",
    "configure_tracing",
    "definition_digest",
    "format_span_tree",
    "guard_tools",
    "mcp_pins",
    "mcp_tools",
    "visible_tools",
    "with_mcp_metadata",
]


def __getattr__(name: str) -> object:
    # The middleware needs the optional ``langchain`` package; import it on first use.
    if name == "OPAGuardMiddleware":
        from langchain_opa_guard.guards.middleware import OPAGuardMiddleware

        return OPAGuardMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
