"""Red team 57: two agents that share the conversation run in parallel from ``START``, one a
node further from ``START`` than the other (``START -> prep -> librarian``). The researcher's
turn (``a1``) is decided and its read runs in step 2, the step in which the librarian
proposes its own turn (``b1``); LangGraph delivers ``b1``'s hand-over to the tools in step 3,
the very next step, and the live-turn check refuses it: the researcher's answer (``r1``),
written in step 2 alongside ``b1``, is to it "a later round" (an answer to a call ``b1`` does
not propose) and it changes the conversation ``b1`` was decided on (``a1`` was settled out of
the digest when ``b1`` was decided, having no answer yet, and is in it when ``b1`` arrives).

What was done (checkpointed, the mediation policy: ``read`` allowed; sync and async):

* the guard's edge (``PolicyGuardNode.edge``) as each agent's conditional edge;
* the ``ToolCallGuard`` interceptor in a ``ToolNode``, each agent routing each of its calls
  to it in a task of its own (LangGraph's prebuilt agent's ``Send``).

Observed: ``r1`` runs; ``b1``'s read ``r2`` neither runs nor is answered ("arrived after the
conversation went on"): the conversation is left with a call without an answer.

Expected (README): a hand-over LangGraph delivers (here in the step after the one that
proposed it) runs; "every tool call gets exactly one answer". Red team 56's fix lets another
branch's model message with calls not close a turn; another branch's answer to its own call,
written in the same step as the turn, is no later round either.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Send
from mediation_kit import READ, USER, Ledger, mediation_engine, mediation_tools, thread_config, turn

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode, ToolCallGuard
from langchain_opa_guard.testing import tool_call

engine = mediation_engine

AGENTS = {
    "researcher": turn(tool_call("read", READ, "r1"), id="a1"),
    "librarian": turn(tool_call("read", {"item": "j"}, "r2"), id="b1"),
}


def _graph(engine: EmbeddedPolicy, wiring: str, ledger: Ledger) -> Any:
    tools = mediation_tools(ledger)
    builder = StateGraph(MessagesState)
    for name, message in AGENTS.items():
        builder.add_node(name, RunnableLambda(lambda s, m=message: {"messages": [m]}, name=name))
    builder.add_node("prep", RunnableLambda(lambda s: {}, name="prep"))
    builder.add_edge(START, "researcher")
    builder.add_edge(START, "prep")
    builder.add_edge("prep", "librarian")
    if wiring == "edge":
        node = GuardedToolNode(tools)
        guard = PolicyGuardNode(engine, registry=node)
        builder.add_node("agent", RunnableLambda(lambda s: {}, name="agent"))  # the guard's
        builder.add_node("guard", guard)
        builder.add_node("tools", node)
        for name in AGENTS:
            builder.add_conditional_edges(name, guard.edge("guard"), ["guard", "tools", END])
    else:
        interceptor = ToolCallGuard(engine, registry=tools)
        builder.add_node(
            "tools",
            ToolNode(
                tools,
                wrap_tool_call=interceptor.wrap_tool_call,
                awrap_tool_call=interceptor.awrap_tool_call,
            ),
        )

        def route(state: Any) -> list[Send]:
            last = state["messages"][-1]
            return [
                Send("tools", {"__type": "tool_call_with_context", "tool_call": c, "state": state})
                for c in last.tool_calls
            ]

        for name in AGENTS:
            builder.add_conditional_edges(name, route, ["tools"])
    builder.add_edge("tools", END)
    return builder.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("mode", ["async", "sync"])
@pytest.mark.parametrize("wiring", ["edge", "interceptor"])
def test_a_turn_proposed_while_another_branch_s_calls_run_still_runs(
    engine: EmbeddedPolicy, wiring: str, mode: str
) -> None:
    ledger = Ledger()
    graph = _graph(engine, wiring, ledger)
    config = thread_config(f"rt57-uneven-{wiring}-{mode}")
    value = {"messages": [("user", "read i and j")]}
    if mode == "async":
        out = asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
    else:
        out = graph.invoke(value, config, context={"user": USER})
    msgs = out["messages"]
    assert {m.id for m in msgs if isinstance(m, AIMessage)} == {"a1", "b1"}
    answered = sorted(m.tool_call_id for m in msgs if isinstance(m, ToolMessage))
    assert sorted(i for _, i, _ in ledger.runs) == ["r1", "r2"], (
        f"an allowed call of a turn LangGraph delivered in the next step did not run: "
        f"{ledger.runs}; conversation: {[(type(m).__name__, m.id) for m in msgs]}"
    )
    assert answered == ["r1", "r2"], answered
