"""How a decided turn is named (``claims.deciding_task``), and what the name must tell apart.

A call of one decided turn runs once in a process. LangGraph runs a subgraph again from its
``START`` (a parent resuming a subgraph that keeps no checkpoints, a ``RetryPolicy`` on the
node that holds it) with new task ids inside it, so inside a subgraph a turn is named by the
tasks that run the subgraph, the deciding node's name and the step (red team 31's
``test_redteam31_unsaved_subgraph.py`` and ``test_redteam31_subgraph_retry.py``). Two turns of
one subgraph run are still two turns, even when the model numbers its calls alike, and two runs
of one subgraph keep their own names (``test_redteam33_nested_send_turns.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from mediation_kit import POLICY, USER, Ledger, Script, node_graph
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.guards.claims import decided_turn, deciding_task
from langchain_opa_guard.testing import tool_call


def config(namespace: str, step: int = 2) -> dict[str, Any]:
    return {"configurable": {"checkpoint_ns": namespace}, "metadata": {"langgraph_step": step}}


def test_in_the_outermost_graph_the_turn_is_named_by_its_task() -> None:
    assert deciding_task(config("guard:1f0e")) == "guard:1f0e"
    assert decided_turn("m1", config("guard:1f0e")) == "guard:1f0e/m1"
    assert decided_turn("m1", config("guard:77aa")) != decided_turn("m1", config("guard:1f0e"))
    assert deciding_task({}) is None and decided_turn("m1", None) is None


def test_in_a_subgraph_a_run_again_from_its_start_names_the_turn_alike() -> None:
    first = deciding_task(config("billing:9a2c|guard:77d1"))
    assert first == "billing:9a2c|guard@2"
    assert deciding_task(config("billing:9a2c|1|guard:0be4")) == first  # a retry's attempt
    assert deciding_task(config("billing:9a2c|guard:77d1", step=5)) != first  # a later turn
    assert deciding_task(config("billing:3333|guard:77d1")) != first  # another run of it


def test_two_runs_of_a_nested_subgraph_keep_their_own_names() -> None:
    # Two Sends to a guarded worker inside a team subgraph, at the same inner step.
    one = deciding_task(config("team:aa|worker:t1|guard:g1"))
    two = deciding_task(config("team:aa|worker:t2|guard:g2"))
    assert one == "team:aa|worker:t1|guard@2" and two == "team:aa|worker:t2|guard@2"


@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_two_turns_of_a_subgraph_numbering_their_calls_alike_both_run(wiring: str) -> None:
    """Some models number calls per message (``call_0`` in every turn): each turn of the
    subgraph's run is a turn of its own, and its call runs."""
    engine = EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)
    ledger = Ledger()

    def turn(amount: int, message_id: str) -> AIMessage:
        call = tool_call("pay", {"amount": amount}, "call_0")
        return AIMessage("", tool_calls=[call], id=message_id)

    script = Script([turn(10, "r1"), turn(20, "r2"), "done"])
    child = node_graph(engine, script, ledger, wiring=wiring)
    builder = StateGraph(MessagesState)
    builder.add_node("assistant", child)
    builder.add_edge(START, "assistant")
    builder.add_edge("assistant", END)
    parent = builder.compile(checkpointer=InMemorySaver())
    out = parent.invoke(
        {"messages": [("user", "pay twice")]},
        {"configurable": {"thread_id": f"numbered-calls-{wiring}"}},
        context={"user": USER},
    )
    assert [args["amount"] for name, _, args in ledger.runs if name == "pay"] == [10, 20]
    answers = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in answers] == ["success", "success"]
