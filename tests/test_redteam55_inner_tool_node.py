"""Red team 55: the ``ToolCallGuard`` interceptor in a ``ToolNode`` that a custom node invokes
itself (an agent loop inside one graph node) refuses an allowed call whose id an earlier,
answered turn of the graph's conversation used: the call neither runs nor is answered.

What was done (a graph of one node, ``agent``, that calls the model and its guarded
``ToolNode`` in a loop on a conversation of its own, and returns the new messages;
checkpointed; the mediation policy: ``read`` is allowed; a model whose call ids restart
each turn, ``call_0``):

1. First request: the model proposes ``read`` ``call_0``; it runs and is answered; the node
   returns, the graph's conversation holds that turn and its answer.
2. Second request, same thread: the model proposes ``read`` ``call_0`` again (a new turn,
   in the node's own conversation, not yet in the graph's).

Observed: ``request_turn_open`` (``missing=True``) finds the graph's last model message
proposing ``call_0``, the first turn, answered, and the interceptor returns
``Command(update={})``: the second read does not run, and the ``ToolNode`` gives no answer
for it (the node's conversation is left with an unanswered call).

Expected (README): "The ToolCallGuard interceptor ... decides a call it does not [find in
the graph's conversation] (a ToolNode called with messages of its own) on the state it is
given"; the live-turn check acts only on a hand-over sent back into the run; "every tool
call gets exactly one answer".
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Command
from mediation_kit import (
    READ,
    USER,
    Ledger,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    thread_config,
)

from langchain_opa_guard import EmbeddedPolicy, ToolCallGuard
from langchain_opa_guard.testing import tool_call


def _answers(out: Any) -> list[ToolMessage]:
    """The answers in a ``ToolNode``'s output (a dict, or a list when a call gave a
    ``Command``)."""
    items = out["messages"] if isinstance(out, dict) else out
    found: list[ToolMessage] = []
    for item in items:
        if isinstance(item, ToolMessage):
            found.append(item)
        elif isinstance(item, Command) and isinstance(item.update, dict):
            found += [m for m in item.update.get("messages", ()) if isinstance(m, ToolMessage)]
    return found


def _graph(engine: EmbeddedPolicy, ledger: Ledger, replies: dict[str, list[Any]]) -> Any:
    tools = mediation_tools(ledger)
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )

    def model(msgs: list[Any]) -> AIMessage:
        return replies.setdefault("script", []).pop(0)

    def agent(state: MessagesState) -> dict[str, Any]:
        msgs, new = list(state["messages"]), []
        for _ in range(4):
            ai = model(msgs)
            msgs.append(ai)
            new.append(ai)
            if not ai.tool_calls:
                break
            out = node.invoke({"messages": msgs})
            answers = _answers(out)
            msgs += answers
            new += answers
        return {"messages": new}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        msgs, new = list(state["messages"]), []
        for _ in range(4):
            ai = model(msgs)
            msgs.append(ai)
            new.append(ai)
            if not ai.tool_calls:
                break
            out = await node.ainvoke({"messages": msgs})
            answers = _answers(out)
            msgs += answers
            new += answers
        return {"messages": new}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, afunc=aagent))
    builder.add_edge(START, "agent")
    return builder.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_inner_tool_node_s_call_under_an_id_an_answered_turn_used_runs(
    engine: EmbeddedPolicy, mode: str
) -> None:
    ledger = Ledger()
    replies = {
        "script": [
            AIMessage("", id="a1", tool_calls=[tool_call("read", READ, "call_0")]),
            AIMessage("read it", id="a2"),
            AIMessage("", id="a3", tool_calls=[tool_call("read", {"item": "j"}, "call_0")]),
            AIMessage("read it too", id="a4"),
        ]
    }
    graph = _graph(engine, ledger, replies)
    config = thread_config(f"rt55-inner-{mode}")
    for text in ("read i", "now read j"):
        value = {"messages": [("user", text)]}
        if mode == "async":
            asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
        else:
            graph.invoke(value, config, context={"user": USER})

    msgs = graph.get_state(config).values["messages"]
    answers = [m for m in msgs if isinstance(m, ToolMessage)]
    assert [a["item"] for _, _, a in ledger.runs] == ["i", "j"], (
        f"the second turn's allowed read did not run: {ledger.runs}"
    )
    assert len(answers) == 2, [m.content for m in answers]
