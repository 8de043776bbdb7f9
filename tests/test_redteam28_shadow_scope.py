"""Red team 28: a guard's scope names its engine and nodes, not its rules.

``guard_scope`` is a digest of the engine's kind, where its policy comes from, the decision
path and the two node names. Two guards on the same policy with the same node names share a
scope even when their rules differ: one in shadow mode (the README's way to roll a policy
out: every deny is logged and the call runs), the other enforcing. A deployment that serves
both from one process (a sandbox or canary assistant in shadow mode next to production; a
LangGraph server lets a thread be run by any assistant) hands the caller a sealed
hand-over that the enforcing guard takes as its own.

The caller runs a turn through the shadow guard's edge (a turn that goes on to the guard
node: here one of its calls does not validate), reads the guard node's input
(``stream_mode="tasks"``), and Sends it to the production guard on the same thread: the
production guard takes the shadow guard's "allow" for a payment its policy denies, seals a
tools payload for it, and the payment runs.
"""

from __future__ import annotations

import copy
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send
from mediation_kit import POLICY, USER, Ledger, Script, mediation_tools
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode
from langchain_opa_guard.guards.guard_edge import ROUTED_KEY
from langchain_opa_guard.testing import tool_call

TEST_POLICIES = ROOT / "tests" / "policies"


def edge_graph(engine: Any, script: Script, ledger: Ledger, **guard_options: Any) -> Any:
    """The README's edge wiring, the guard built with ``guard_options``."""
    tools = GuardedToolNode(mediation_tools(ledger))

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [script.reply(state["messages"])]}

    guard = PolicyGuardNode(engine, registry=tools, **guard_options)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, name="agent"))
    builder.add_node("guard", guard)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


def test_a_shadow_guard_s_edge_decisions_run_a_denied_payment_in_production() -> None:
    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)  # pay over 1000: denied
    turn = AIMessage(
        "",
        tool_calls=[
            tool_call("pay", {"amount": 99999}, "c1"),  # denied; shadowed in the sandbox
            tool_call("read", {}, "c2"),  # does not validate: the turn goes to the guard node
        ],
        id="m1",
    )
    sandbox_ledger = Ledger()  # the sandbox's tools (dry-run ones, in a real deployment)
    sandbox = edge_graph(engine, Script([turn]), sandbox_ledger, shadow=True)

    ledger = Ledger()
    production = edge_graph(engine, Script(["hi"]), ledger)  # enforcing

    config = {"configurable": {"thread_id": "rt28-shared-thread"}}
    seen = []
    for event in sandbox.stream(
        {"messages": [("user", "hi")]}, config, context={"user": USER}, stream_mode="tasks"
    ):
        if event.get("name") == "guard" and "input" in event:
            seen.append(copy.deepcopy(event["input"]))
    [payload] = seen
    assert ROUTED_KEY in payload
    assert [n for n, _, _ in sandbox_ledger.runs] == ["pay"]  # shadow mode: it ran there

    # Control: the production guard denies the payment when the model proposes it.
    control = production.invoke(
        {"messages": [("user", "hi"), turn]},
        {"configurable": {"thread_id": "rt28-control"}},
        context={"user": USER},
    )
    assert ledger.runs == [], control

    production.invoke(Command(goto=Send("guard", payload)), config, context={"user": USER})

    # Expected: the shadow guard's decisions grant nothing to the enforcing guard; the
    # payment is decided afresh there and denied.
    assert ledger.runs == []
