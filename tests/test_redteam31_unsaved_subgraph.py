"""Red team 31: a guarded subgraph compiled with ``checkpointer=False`` runs an allowed call
again when the parent resumes it.

LangGraph lets a subgraph opt out of persistence (``compile(checkpointer=False)``) while its
parent has a checkpointer. ``interrupt()`` still works inside it (the parent saves the pause),
but on resume the parent re-runs the whole subgraph from its START, since none of its steps
were saved. The guard's run-once claims name a decided turn by the deciding task's checkpoint
namespace (:func:`langchain_opa_guard.guards.claims.decided_turn`), and inside such a
subgraph every task id is new on each run (its checkpoints are made afresh), so the same
model turn with the same call ids is a "new" turn and its granted calls run again.

The README says "Nothing runs twice": a call of a decided turn that already started in this
process does not start again, and a ``ToolNode`` interceptor's "task run again to resume a
tool's own ``interrupt()`` answers the calls that already ran without running them again";
it also says that without a checkpointer "nothing can pause or resume", which is not so in
such a subgraph. Here the human approves a later call (or a tool's own confirmation), and
the earlier payment of 100, which the policy allowed once and which already ran, is paid a
second time, with the same model message and call id.
"""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import InjectedToolCallId, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command, interrupt
from mediation_kit import (
    POLICY,
    USER,
    Ledger,
    Script,
    agent_graph,
    mediation_tools,
    node_graph,
)
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy, ToolCallGuard


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def pay_then_ask() -> Script:
    """Turn 1: pay 100 (allowed, runs). Turn 2: a send the policy wants a human for."""
    return Script(
        [
            AIMessage(
                "", tool_calls=[{"name": "pay", "args": {"amount": 100}, "id": "p1"}], id="a1"
            ),
            AIMessage(
                "",
                tool_calls=[
                    {"name": "send", "args": {"to": "x@ask.test", "body": "hi"}, "id": "s1"}
                ],
                id="a2",
            ),
        ]
    )


def in_parent(child: Any) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("sub", child)
    builder.add_edge(START, "sub")
    builder.add_edge("sub", END)
    return builder.compile(checkpointer=InMemorySaver())


def payments(ledger: Ledger) -> list[str]:
    return [call_id for name, call_id, _ in ledger.runs if name == "pay"]


def run_and_resume(parent: Any, thread: str, answer: Any) -> None:
    config = {"configurable": {"thread_id": thread}}
    out = parent.invoke({"messages": [("user", "pay, then write")]}, config, context={"user": USER})
    if out.get("__interrupt__"):
        parent.invoke(Command(resume=answer), config, context={"user": USER})


@pytest.mark.parametrize("surface", ["guard node", "guard edge", "middleware"])
def test_approving_a_later_call_pays_the_earlier_payment_again(
    engine: EmbeddedPolicy, surface: str
) -> None:
    ledger = Ledger()
    if surface == "middleware":
        child = agent_graph(engine, pay_then_ask(), ledger, checkpointer=False)
    else:
        wiring = "edge" if surface == "guard edge" else "node"
        child = node_graph(engine, pay_then_ask(), ledger, checkpointer=False, wiring=wiring)
    parent = in_parent(child)

    run_and_resume(parent, f"rt31-unsaved-{surface}", {"decisions": [{"type": "approve"}]})

    # Expected: the payment p1 of model turn a1 was decided once and runs once.
    assert payments(ledger) == ["p1"], ledger.runs


def test_a_tools_own_confirmation_pays_its_sibling_again(engine: EmbeddedPolicy) -> None:
    """The interceptor: one turn pays 100 and reads with a tool that asks for confirmation."""
    ledger = Ledger()

    def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an item, after the user confirms."""
        confirmed = interrupt("read it?")
        return ledger.record("read", tool_call_id, {"item": item, "confirmed": confirmed})

    tools = [t for t in mediation_tools(ledger) if t.name != "read"]
    tools.append(StructuredTool.from_function(read))
    script = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    {"name": "pay", "args": {"amount": 100}, "id": "p1"},
                    {"name": "read", "args": {"item": "invoice"}, "id": "r1"},
                ],
                id="a1",
            )
        ]
    )
    guard = ToolCallGuard(engine, registry=tools)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}))
    builder.add_node(
        "tools",
        ToolNode(tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call),
    )
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    builder.add_edge("tools", "agent")
    parent = in_parent(builder.compile(checkpointer=False))

    run_and_resume(parent, "rt31-unsaved-interceptor", "yes")

    assert [name for name, _, _ in ledger.runs].count("read") == 1
    # Expected (README: a task run again to resume a tool's own interrupt() answers the
    # calls that already ran without running them again): p1 runs once.
    assert payments(ledger) == ["p1"], ledger.runs
