"""One model turn run through each guard surface, for tests that compare them.

``run_turn`` builds the graph of one surface (the guard node with a ``GuardedToolNode``, the
``ToolCallGuard`` interceptor on a plain ``ToolNode``, the ``create_agent`` middleware, or
``guard_tools``) around the given tools, lets a scripted model make one call and then say
"done", and returns the call's one answer and the conversation.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from langchain_opa_guard import (
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyEngine,
    PolicyGuardNode,
    ToolCallGuard,
    guard_tools,
)
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

SURFACES = ["node", "interceptor", "middleware", "guard_tools"]
MODES = ["invoke", "ainvoke"]


def run_turn(
    surface: str,
    engine: PolicyEngine,
    tools: Sequence[BaseTool],
    name: str,
    args: Mapping[str, Any],
    mode: str,
    *,
    context: Any = None,
) -> tuple[ToolMessage, list[Any]]:
    """One model turn calling ``name(**args)`` (call id ``c1``) on ``surface``: the call's
    one answer and the conversation."""
    turn = AIMessage("", tool_calls=[tool_call(name, dict(args), "c1")], id="turn-1")
    graph: Any
    if surface == "middleware":
        graph = create_agent(
            ScriptedChatModel(script=[turn, "done"]),
            list(tools),
            middleware=[OPAGuardMiddleware(engine, registry=list(tools))],
        )
    elif surface == "guard_tools":
        graph = create_agent(ScriptedChatModel(script=[turn, "done"]), guard_tools(tools, engine))
    else:
        script = iter([turn])
        builder = StateGraph(MessagesState)
        builder.add_node("agent", lambda s: {"messages": [next(script, AIMessage("done"))]})
        if surface == "node":
            node = GuardedToolNode(list(tools))
            builder.add_node("guard", PolicyGuardNode(engine, registry=node))
            builder.add_node("tools", node)
            builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        else:
            guard = ToolCallGuard(engine, registry=list(tools))
            tool_node = ToolNode(
                list(tools),
                wrap_tool_call=guard.wrap_tool_call,
                awrap_tool_call=guard.awrap_tool_call,
            )
            builder.add_node("tools", tool_node)
            builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
        builder.add_edge(START, "agent")
        builder.add_edge("tools", "agent")
        graph = builder.compile()
    state = {"messages": [("user", "go")]}
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    if mode == "ainvoke":
        result = asyncio.run(graph.ainvoke(state, config, context=context))
    else:
        result = graph.invoke(state, config, context=context)
    messages = list(result["messages"])
    answers = [m for m in messages if isinstance(m, ToolMessage) and m.tool_call_id == "c1"]
    assert len(answers) == 1, f"c1 has {len(answers)} answers"
    assert messages[-1].content == "done"  # the run went on
    return answers[0], messages
