"""Red team 33: two different turns inside a nested subgraph share one decided-turn name.

Since today a turn decided in a subgraph is named by the *outermost* task (with its id), the
inner nodes' names (ids dropped) and the inner step (:func:`~.claims.deciding_task`). Two
runs of one inner subgraph node under one outermost task (parallel ``Send``s in a middle
graph, the typical map-reduce of workers) decide their turns at the same inner step, in
nodes of the same names: the only thing left to tell their turns apart is the model
message's id. A server that repeats response and call ids (which the middleware already
guards against elsewhere: "some servers repeat response ids") gives both workers' turns
the same name (``team:<id>|worker|guard@2/a1`` with the guard node; the agent's task with
the guard edge, ``after_model``'s with ``OPAGuardMiddleware`` in ``create_agent``), so the
second worker's allowed payment is answered "did not run again: it already started for this
decision" and never runs.
Before today the inner task ids (``outer:<id>|worker:<t1>|guard:<t2>``) kept them apart,
as they still do when the workers are Sent from the outermost graph.

What should happen: each worker's turn is a turn of its own; both allowed payments run.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import Send
from mediation_kit import POLICY, USER, Ledger, mediation_tools
from opa_process import ROOT

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyGuardNode,
)
from langchain_opa_guard.testing import ScriptedChatModel


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def reply(messages: Any) -> AIMessage:
    """The model pays the amount its job names, under the message id ``a1`` and the call
    id ``p1`` (a server that repeats its ids), then answers."""
    if any(isinstance(m, AIMessage) for m in messages):
        return AIMessage("done")
    job = next(m for m in messages if isinstance(m, HumanMessage))
    amount = int(str(job.content).split()[-1])
    call = {"name": "pay", "args": {"amount": amount}, "id": "p1"}
    return AIMessage("", tool_calls=[call], id="a1")


def worker_graph(engine: EmbeddedPolicy, ledger: Ledger, surface: str) -> Any:
    """A guarded worker: ``agent -> guard -> tools -> agent`` (the guard node or its edge),
    or ``create_agent`` with the guard middleware."""
    if surface == "middleware":
        tools = mediation_tools(ledger)
        model = ScriptedChatModel(script=[reply] * 4)
        return create_agent(model, tools, middleware=[OPAGuardMiddleware(engine, registry=tools)])
    node = GuardedToolNode(mediation_tools(ledger))

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [reply(state["messages"])]}

    guard = PolicyGuardNode(engine, registry=node)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, name="agent"))
    builder.add_node("guard", guard)
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    if surface == "guard edge":
        builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    else:
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile()


def team_graph(worker: Any, checkpointer: Any = None) -> Any:
    """The middle graph: one ``Send`` to the worker per job."""

    def fan_out(state: MessagesState) -> list[Send]:
        return [
            Send("worker", {"messages": [HumanMessage(f"pay {amount}")]}) for amount in (100, 200)
        ]

    builder = StateGraph(MessagesState)
    builder.add_node("worker", worker)
    builder.add_conditional_edges(START, fan_out, ["worker"])
    builder.add_edge("worker", END)
    return builder.compile(checkpointer=checkpointer)


def outer_graph(team: Any) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("team", team)
    builder.add_edge(START, "team")
    builder.add_edge("team", END)
    return builder.compile(checkpointer=InMemorySaver())


SURFACES = ["guard node", "guard edge", "middleware"]


def paid(ledger: Ledger) -> list[int]:
    return sorted(args["amount"] for name, _, args in ledger.runs if name == "pay")


@pytest.mark.parametrize("surface", SURFACES)
def test_two_workers_sent_in_a_subgraph_both_pay(engine: EmbeddedPolicy, surface: str) -> None:
    ledger = Ledger()
    graph = outer_graph(team_graph(worker_graph(engine, ledger, surface)))
    config = {"configurable": {"thread_id": f"rt33-nested-send-{surface}"}}
    graph.invoke({"messages": [("user", "pay both")]}, config, context={"user": USER})

    # Expected: two workers, two turns, two allowed payments: 100 and 200 both run.
    assert paid(ledger) == [100, 200], ledger.runs


@pytest.mark.parametrize("surface", SURFACES)
def test_control_workers_sent_from_the_outermost_graph_both_pay(
    engine: EmbeddedPolicy, surface: str
) -> None:
    """Control (passes today): the same workers Sent one level up are told apart."""
    ledger = Ledger()
    team = team_graph(worker_graph(engine, ledger, surface), InMemorySaver())
    config = {"configurable": {"thread_id": f"rt33-top-send-{surface}"}}
    team.invoke({"messages": [("user", "pay both")]}, config, context={"user": USER})
    assert paid(ledger) == [100, 200], ledger.runs
