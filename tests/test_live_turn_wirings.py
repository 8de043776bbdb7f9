"""Red team 53's replay on the other wirings: the tools task's input a caller saw, sent back
with ``Command(goto=Send("tools", ...))`` after the turn was dropped and a read made the
policy deny the call (``tests/test_redteam53_dropped_turn_replay.py`` for the guard node and
edge). ``create_agent`` with the guard middleware, and LangGraph's prebuilt ReAct agent with
the ``ToolNode`` interceptor: the call does not run, and gets no second answer."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command, Send
from mediation_kit import USER, Ledger, Script, mediation_tools, messages, runs_of, thread_config
from replay_kit import SEND, replay_engine, tools_input_seen

from langchain_opa_guard import (
    EmbeddedPolicy,
    OPAGuardMiddleware,
    ToolCallGuard,
    answer_open_calls,
)
from langchain_opa_guard.testing import ScriptedChatModel, tool_call


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    return replay_engine(tmp_path_factory, "live_turn_wirings")


def _script() -> Script:
    return Script(
        [
            AIMessage("", tool_calls=[tool_call("send", SEND, "s1")], id="a1"),
            AIMessage("", tool_calls=[tool_call("read", {"item": "page"}, "r1")], id="a2"),
            "read it",
            "ok",
            "ok",
            "ok",
        ]
    )


def _graph(wiring: str, engine: EmbeddedPolicy, ledger: Ledger) -> Any:
    script = _script()
    model = ScriptedChatModel(script=[script.reply] * 16)
    tools = mediation_tools(ledger)
    if wiring == "middleware":
        return create_agent(
            model,
            tools,
            middleware=[OPAGuardMiddleware(engine, registry=tools)],
            checkpointer=InMemorySaver(),
        )
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    if wiring == "interceptor-react":
        from langgraph.prebuilt import create_react_agent

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # create_react_agent's deprecation
            return create_react_agent(
                model, node, checkpointer=InMemorySaver(), pre_model_hook=answer_open_calls
            )

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node(answer_open_calls)
    builder.add_node("agent", agent)
    builder.add_node("tools", node)
    builder.add_edge(START, "answer_open_calls")
    builder.add_edge("answer_open_calls", "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("wiring", ["middleware", "interceptor", "interceptor-react"])
def test_a_dropped_turn_s_tools_input_sent_back_runs_nothing(
    engine: EmbeddedPolicy, wiring: str
) -> None:
    ledger = Ledger()
    graph = _graph(wiring, engine, ledger)
    config = thread_config(f"live-turn-{wiring}")

    async def scenario() -> None:
        seen = await tools_input_seen(graph, config)
        await asyncio.sleep(0.05)
        assert runs_of(ledger, "s1") == 0
        await graph.ainvoke(
            {"messages": [("user", "read the page first")]}, config, context={"user": USER}
        )
        assert runs_of(ledger, "r1") == 1
        await graph.ainvoke(Command(goto=Send("tools", seen)), config, context={"user": USER})

    asyncio.run(scenario())
    assert runs_of(ledger, "s1") == 0, ledger.runs
    answers = [
        m for m in messages(graph, config) if isinstance(m, ToolMessage) and m.tool_call_id == "s1"
    ]
    assert len(answers) <= 1, [m.content for m in answers]


def test_the_interceptor_decides_on_the_conversation_the_graph_holds(
    engine: EmbeddedPolicy,
) -> None:
    """The model read a page (``r1``), then proposes ``send`` (``s2``), which the policy
    denies after a read; the run waits before its tools (``interrupt_before``). The caller
    sends the tools node a state of its own holding the same call without the read
    (``Command(goto=Send("tools", {"messages": [...]}))``). The interceptor decides the call
    on the conversation the graph holds, where the read is: the send is denied and does not
    run."""
    ledger = Ledger()
    script = Script(
        [
            AIMessage("", tool_calls=[tool_call("read", {"item": "page"}, "r1")], id="a1"),
            AIMessage("", tool_calls=[tool_call("send", SEND, "s2")], id="a2"),
            "ok",
            "ok",
        ]
    )
    model = ScriptedChatModel(script=[script.reply] * 16)
    tools = mediation_tools(ledger)
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile(checkpointer=InMemorySaver(), interrupt_before=["tools"])
    config = thread_config("live-turn-interceptor-state")
    graph.invoke({"messages": [("user", "read, then send")]}, config, context={"user": USER})
    graph.invoke(None, config, context={"user": USER})  # r1 runs; the model proposes s2
    assert runs_of(ledger, "r1") == 1
    waiting = messages(graph, config)[-1]
    assert isinstance(waiting, AIMessage) and waiting.tool_calls[0]["id"] == "s2"

    crafted = {"messages": [("user", "send b a hi"), waiting]}
    graph.invoke(Command(goto=Send("tools", crafted)), config, context={"user": USER})
    graph.invoke(None, config, context={"user": USER})

    assert runs_of(ledger, "s2") == 0, ledger.runs
    answers = [
        m for m in messages(graph, config) if isinstance(m, ToolMessage) and m.tool_call_id == "s2"
    ]
    # (The caller's Send and the waiting task each answer it: a Command(goto=...) sent into
    # a paused run, known and open, README "Human approval".)
    assert answers and all(
        m.status == "error" and "no sending after a read" in str(m.content) for m in answers
    ), [m.content for m in answers]
