"""Red team 28: the edge's decisions are taken again each time they reach the guard node.

A tools payload carries the decided turn (``decided_turn``: the deciding task and the model
message) under its seal, so a replay of it in the same thread and process finds its calls
claimed and runs nothing. The edge's decisions carry no such identity: the guard node that
takes them counts the turn as decided by *its own* task, and every Send of the same sealed
payload (or a time travel to the checkpoint that holds it) is a new guard task, a new
"decided turn", with fresh claims. Within the time to live, in the same thread and the same
process, the edge's old "allow" runs the call again each time, without the engine being
asked; on an OPA server (no revision the guard can compare) an allow the operator revoked
runs after the revocation, where the same replay of a tools payload runs nothing.
"""

from __future__ import annotations

import copy

import pytest
import requests
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send
from mediation_kit import USER, Ledger, Script, node_graph

from langchain_opa_guard import OPAServer
from langchain_opa_guard.guards.guard_edge import ROUTED_KEY
from langchain_opa_guard.testing import tool_call

OPEN = """package rt28pay

default decision := {"allow": true, "reasons": []}
"""

REVOKED = """package rt28pay

default decision := {"allow": true, "reasons": []}

decision := {"allow": false, "reasons": [{"code": "revoked", "message": "payments revoked"}]} if {
	input.tool.name == "pay"
}
"""


def put_policy(opa_url: str, text: str) -> None:
    reply = requests.put(f"{opa_url}/v1/policies/rt28pay", data=text.encode(), timeout=10)
    reply.raise_for_status()


@pytest.mark.parametrize("how", ["Send of the captured payload", "time travel"])
def test_a_revoked_edge_allow_runs_again_in_the_same_thread(opa_url: str, how: str) -> None:
    put_policy(opa_url, OPEN)
    engine = OPAServer(opa_url, policy="rt28pay/decision")
    turn = AIMessage(
        "",
        tool_calls=[
            tool_call("pay", {"amount": 500}, "c1"),  # allowed
            tool_call("read", {}, "c2"),  # does not validate: the turn goes to the guard node
        ],
        id="m1",
    )
    ledger = Ledger()
    graph = node_graph(engine, Script([turn]), ledger, checkpointer=InMemorySaver(), wiring="edge")
    config = {"configurable": {"thread_id": f"rt28-routed-{how}"}}
    seen = []
    for event in graph.stream(
        {"messages": [("user", "pay")]}, config, context={"user": USER}, stream_mode="tasks"
    ):
        if event.get("name") == "guard" and "input" in event:
            seen.append(copy.deepcopy(event["input"]))
    [payload] = seen
    assert ROUTED_KEY in payload
    assert [n for n, _, _ in ledger.runs] == ["pay"]

    try:
        put_policy(opa_url, REVOKED)  # the operator revokes payments
        control = graph.invoke(
            {"messages": [("user", "pay")]},
            {"configurable": {"thread_id": f"rt28-routed-control-{how}"}},
            context={"user": USER},
        )
        denied = [m for m in control["messages"] if isinstance(m, ToolMessage)]
        assert "revoked" in str(denied[0].content)
        assert len(ledger.runs) == 1

        if how == "time travel":
            history = list(graph.get_state_history(config))
            # The checkpoint after the agent's step: the guard's Send, with the edge's
            # decisions, is its next task.
            fork = next(s for s in history if s.next == ("guard",))
            graph.invoke(None, fork.config, context={"user": USER})
        else:
            graph.invoke(Command(goto=Send("guard", payload)), config, context={"user": USER})
    finally:
        put_policy(opa_url, OPEN)
        engine.close()

    # Expected: the payment does not run again: the edge's decision was taken once (a
    # second taking of it finds its calls claimed) or the turn is decided afresh (denied).
    assert len(ledger.runs) == 1, ledger.runs
