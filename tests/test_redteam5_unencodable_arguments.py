"""Red team 5: a model's argument that UTF-8 cannot hold crashes the guard instead of
being denied.

Attack: the model (steered by injected text) proposes a call whose arguments hold an object
key with a lone surrogate: ``{"query": "opa", "options": {"\\ud800": 1}}``. This is what
a provider's ``json.loads`` gives for the JSON text ``{"\\ud800": 1}``, so any model can
send it; the tool's ``options: dict[str, Any]`` accepts it. `contract.jsonable` replaces a
lone surrogate in a string *value* by "?", but keeps object *keys* as they are.

1. ``create_agent`` with ``OPAGuardMiddleware``: the policy input cannot be encoded, so the
   call is denied (`invalid_input`); then ``after_model`` compares the turn with its
   decision (`_as_decided` -> `call_digest`, ``json.dumps(..., ensure_ascii=False)
   .encode()``), which raises ``UnicodeEncodeError`` out of the agent.
2. Every surface with ``decision_log=DecisionLog(...)`` (README "Policy regression kit"):
   the log writes the policy input with ``ensure_ascii=False`` to a UTF-8 file; the write
   raises ``UnicodeEncodeError``, which `deciding._log` does not catch (it catches
   ``OSError`` only), and it escapes the guard node, the ``ToolNode`` interceptor and the
   middleware.

README promises ("Failure behaviour"): "The call is denied, the model is told that the
policy could not be consulted, and nothing runs. No exception escapes into the graph"
(`invalid_input`: "input that is not JSON"); the project's standard: "a dependency's raw
output (parser dumps, stack traces) never reaches the user or the model".

Observed on main: ``UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud800'
...: surrogates not allowed`` raised from ``invoke``/``ainvoke`` (the middleware with or
without a log; the guard node and the interceptor with a log). Controls: the guard node and
the interceptor without a log deny the call and the run goes on.

What should happen: the call is answered once (denied: it cannot be decided), nothing runs,
the run goes on; a decision log records the decision (or logs that it could not).

No checkpointer here: LangGraph's own serializer refuses such a message before any guard
runs (a graph without one, and ``create_agent``'s default, reaches the guard).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from langchain_opa_guard import (
    DecisionLog,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyEngine,
    PolicyGuardNode,
    ToolCallGuard,
)
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

ADMIN = {"id": "user-1", "role": "admin"}
ODD_ARGS = {"query": "opa", "options": {"\ud800": 1}}


def search_tools(ran: list[Any]) -> list[BaseTool]:
    def search_web(query: str, options: dict[str, Any] | None = None) -> str:
        """Search the web."""
        ran.append(options)
        return "results"

    return [StructuredTool.from_function(search_web)]


def run(surface: str, engine: PolicyEngine, log: DecisionLog | None, mode: str) -> list[Any]:
    ran: list[Any] = []
    tools = search_tools(ran)
    options: dict[str, Any] = {"decision_log": log} if log is not None else {}
    turn = AIMessage("", tool_calls=[tool_call("search_web", ODD_ARGS, "s1")], id="turn-1")
    if surface == "middleware":
        graph: Any = create_agent(
            ScriptedChatModel(script=[turn, "done"]),
            tools,
            middleware=[OPAGuardMiddleware(engine, registry=tools, **options)],
        )
    else:
        script = iter([turn])
        builder = StateGraph(MessagesState)
        builder.add_node("agent", lambda s: {"messages": [next(script, AIMessage("done"))]})
        if surface == "node":
            node = GuardedToolNode(tools)
            builder.add_node("guard", PolicyGuardNode(engine, registry=node, **options))
            builder.add_node("tools", node)
            builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        else:
            guard = ToolCallGuard(engine, registry=tools, **options)
            tool_node = ToolNode(
                tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
            )
            builder.add_node("tools", tool_node)
            builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
        builder.add_edge(START, "agent")
        builder.add_edge("tools", "agent")
        graph = builder.compile()
    state = {"messages": [("user", "search for opa")]}
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    if mode == "ainvoke":
        result = asyncio.run(graph.ainvoke(state, config, context={"user": ADMIN}))
    else:
        result = graph.invoke(state, config, context={"user": ADMIN})
    assert ran == [], "the call ran although its arguments could not be decided"
    return list(result["messages"])


def the_answer(messages: list[Any]) -> ToolMessage:
    found = [m for m in messages if isinstance(m, ToolMessage) and m.tool_call_id == "s1"]
    assert len(found) == 1, f"s1 has {len(found)} answers"
    return found[0]


@pytest.mark.parametrize("surface", ["node", "interceptor"])
def test_control_without_a_log_the_call_is_denied(engine: PolicyEngine, surface: str) -> None:
    messages = run(surface, engine, None, "invoke")
    answer = the_answer(messages)
    assert answer.status == "error"
    assert "could not be checked against the policy" in str(answer.content)
    assert messages[-1].content == "done"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_the_middleware_denies_an_argument_utf8_cannot_hold(
    engine: PolicyEngine, mode: str
) -> None:
    messages = run("middleware", engine, None, mode)  # must not raise
    answer = the_answer(messages)
    assert answer.status == "error"
    assert "could not be checked against the policy" in str(answer.content)
    assert messages[-1].content == "done"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize("surface", ["node", "interceptor", "middleware"])
def test_an_argument_the_log_cannot_write_does_not_crash_the_run(
    engine: PolicyEngine, surface: str, mode: str, tmp_path: Path
) -> None:
    log = DecisionLog(tmp_path / "decisions.jsonl")
    messages = run(surface, engine, log, mode)  # must not raise
    answer = the_answer(messages)
    assert answer.status == "error"
    assert "surrogates" not in str(answer.content)  # no codec message reaches the model
    assert messages[-1].content == "done"
