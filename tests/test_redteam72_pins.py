"""Red team 72, pins of what held (these pass).

1. A guard whose ``registry=`` (a list of tools) holds a ``pay`` that reads ``amount`` as
   text, in front of a ``GuardedToolNode`` (or a ``ToolNode`` with the ``ToolCallGuard``
   interceptor) holding another ``pay`` that reads it as an integer: ``"5000"`` is not run
   as ``5000`` (the tools node refuses it as reading differently; the interceptor decides it
   with the tool that runs and denies it).
2. Two tools of one name in a ``GuardedToolNode``, a ``ToolNode`` with the interceptor, or
   ``create_agent`` with the middleware: the guard decides with the tool LangGraph runs (the
   last of the name), in either order, so ``"5000"`` runs only where the tool that runs reads
   it as text (the mediation policy allows a text amount).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from mediation_kit import mediation_engine as engine  # noqa: F401 (the engine fixture)

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyGuardNode,
    ToolCallGuard,
)
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

USER = {"id": "u", "role": "t"}


def _pays(ran: list[tuple[str, Any]]) -> tuple[BaseTool, BaseTool]:
    def pay_text(amount: str) -> str:
        """Pay."""
        ran.append(("text", amount))
        return "ok"

    def pay_int(amount: int) -> str:
        """Pay."""
        ran.append(("int", amount))
        return "ok"

    return (
        StructuredTool.from_function(pay_text, name="pay"),
        StructuredTool.from_function(pay_int, name="pay"),
    )


def _turn() -> AIMessage:
    return AIMessage("", tool_calls=[tool_call("pay", {"amount": "5000"}, "p1")], id="a1")


def _graph(
    guard_engine: EmbeddedPolicy, kind: str, node_tools: list[BaseTool], registry: Any
) -> Any:
    if kind == "middleware":
        model = ScriptedChatModel(script=[_turn(), AIMessage("done")])
        return create_agent(
            model, node_tools, middleware=[OPAGuardMiddleware(guard_engine, registry=registry)]
        )
    script = iter([_turn()])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [next(script, AIMessage("done"))]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    if kind == "node":
        tools = GuardedToolNode(node_tools)
        builder.add_node("guard", PolicyGuardNode(guard_engine, registry=registry or tools))
        builder.add_node("tools", tools)
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    else:
        guard = ToolCallGuard(guard_engine, registry=registry or node_tools)
        builder.add_node("tools", ToolNode(node_tools, wrap_tool_call=guard.wrap_tool_call))
        builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge(START, "agent")
    builder.add_edge("tools", "agent")
    return builder.compile()


def _answer(out: Any) -> ToolMessage:
    return next(m for m in out["messages"] if isinstance(m, ToolMessage))


@pytest.mark.parametrize("kind", ["node", "interceptor"])
def test_a_registry_tool_that_reads_otherwise_grants_nothing(
    engine: EmbeddedPolicy,  # noqa: F811
    kind: str,
) -> None:
    ran: list[tuple[str, Any]] = []
    text, integer = _pays(ran)
    out = _graph(engine, kind, [integer], [text]).invoke(
        {"messages": [("user", "pay")]}, context={"user": USER}
    )
    assert ran == []
    assert _answer(out).status == "error"


@pytest.mark.parametrize("kind", ["node", "interceptor", "middleware"])
@pytest.mark.parametrize("text_last", [False, True])
def test_two_tools_of_one_name_are_decided_as_the_one_that_runs(
    engine: EmbeddedPolicy,  # noqa: F811
    kind: str,
    text_last: bool,
) -> None:
    ran: list[tuple[str, Any]] = []
    text, integer = _pays(ran)
    order = [integer, text] if text_last else [text, integer]
    registry = order if kind == "middleware" else None
    out = _graph(engine, kind, order, registry).invoke(
        {"messages": [("user", "pay")]}, context={"user": USER}
    )
    if text_last:
        assert ran == [("text", "5000")]
    else:
        assert ran == []
        assert _answer(out).status == "error"
