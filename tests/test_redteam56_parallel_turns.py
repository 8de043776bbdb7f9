"""Red team 56: two reasoning nodes that share the conversation and propose calls in the same
step (two agents run in parallel from ``START``): LangGraph delivers each turn's calls to the
tools in the next step, and the live-turn check refuses the turn written first, because the
other branch's model message, which proposes calls of its own, follows it in the conversation
("a later round"). Its allowed call neither runs nor is answered.

What was done (checkpointed, the mediation policy: ``read`` allowed; sync and async):

* the guard's edge (``PolicyGuardNode.edge``) as each agent's conditional edge: ``researcher``
  proposes ``a1`` (``read`` ``r1``) and ``librarian`` ``b1`` (``read`` ``r2``) in step 1; each
  edge hands its allowed turn to the tools node (two ``Send``s); step 2 runs both tools tasks;
* the ``ToolCallGuard`` interceptor in a ``ToolNode``, each agent routing each of its calls to
  it in a task of its own, as LangGraph's prebuilt agent does
  (``Send("tools", {"__type": "tool_call_with_context", ...})``).

Observed: the tools task of the turn the conversation holds first (``b1`` or ``a1``, the
order in which LangGraph applies the two branches' writes) is refused as "sent back after the
conversation went on": its read does not run and gets no answer; the other runs. The
conversation is left with a call without an answer.

Expected (README): the live-turn check acts on a hand-over sent back into the run after its
turn left the conversation; a hand-over LangGraph delivers (here in the very next step of the
step that proposed it) runs; "every tool call gets exactly one answer". Neither turn is of a
later round than the other: they were proposed in the same step.
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
        builder.add_edge(START, name)
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
            # Each branch's own message: the edge reads the state with its node's writes.
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
def test_two_turns_proposed_in_the_same_step_both_run(
    engine: EmbeddedPolicy, wiring: str, mode: str
) -> None:
    ledger = Ledger()
    graph = _graph(engine, wiring, ledger)
    config = thread_config(f"rt56-parallel-{wiring}-{mode}")
    value = {"messages": [("user", "read i and j")]}
    if mode == "async":
        out = asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
    else:
        out = graph.invoke(value, config, context={"user": USER})
    msgs = out["messages"]
    assert {m.id for m in msgs if isinstance(m, AIMessage)} == {"a1", "b1"}
    answered = sorted(m.tool_call_id for m in msgs if isinstance(m, ToolMessage))
    assert sorted(i for _, i, _ in ledger.runs) == ["r1", "r2"], (
        f"an allowed call of a turn LangGraph delivered did not run: {ledger.runs}"
    )
    assert answered == ["r1", "r2"], answered
