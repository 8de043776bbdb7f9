"""Red team 59: a parallel branch that writes a note (a system or user message) in the
model's step, ordered before the turn, gets the turn refused by the guard's edge.

What was done: ``START -> agent`` and ``START -> aa_context`` in parallel (a context node
beside the model, as a retrieval or memory node is wired); the agent routes through the
guard's edge (``PolicyGuardNode.edge``), the other node writes one ``SystemMessage`` (or
``HumanMessage``) with an id of its own. LangGraph applies the step's writes in task order,
so the note lands between the user's request and the model's turn (``r1``, an allowed
``read``). A single ``invoke``; nothing sent back, nothing edited, nothing removed.

Observed: the edge decided the turn on its own view (the conversation plus the agent's
writes: no note) and sealed that fingerprint. Where the hand-over arrives the graph's
conversation has the note between the fingerprinted messages and the turn;
``live_turn._changed`` allows only another branch's unanswered turn or answers there, so
"the conversation before it changed" and nothing of it runs: ``r1`` never runs and is never
answered, the model is called again with its call open. The guard node wiring (the node
reads the channel, note included) runs the same flow. A branch writing a model message
without calls there leaves the turn open (README: "Another branch's turn and answers,
written beside the turn in its step, leave it open"); only a removal beside the guard is
documented as refused (red team 58's trim).

Expected: as with the node wiring: the turn LangGraph delivers runs its allowed call, which
is answered exactly once.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from mediation_kit import (
    READ,
    USER,
    Ledger,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    runs_of,
    thread_config,
)

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode
from langchain_opa_guard.testing import tool_call


def _graph(engine: EmbeddedPolicy, ledger: Ledger, wiring: str, note: Any) -> Any:
    tools = GuardedToolNode(mediation_tools(ledger))
    guard = PolicyGuardNode(engine, registry=tools)
    steps = {"n": 0}

    def agent(state: MessagesState) -> dict[str, Any]:
        steps["n"] += 1
        if steps["n"] == 1:
            call = tool_call("read", READ, "r1")
            return {"messages": [AIMessage("", tool_calls=[call], id="a1")]}
        return {"messages": [AIMessage("done", id=f"a{steps['n']}")]}

    def context(state: MessagesState) -> dict[str, Any]:
        return {"messages": [note]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("aa_context", context)
    builder.add_node("guard", guard)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_edge(START, "aa_context")
    if wiring == "edge":
        builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    else:
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


# Known and documented (README, "Sealed hand-overs"): the guard as the edge takes its turn's
# fingerprint from the reasoning node's own view of its write, so messages written in that
# step before the turn (without ids, or by another branch) make LangGraph's delivery read as
# a moved turn, and the turn's calls are left for answer_open_calls. The guard node reads the
# conversation the graph holds and is not affected. Strict, so that the day the edge's
# fingerprint takes them in these are turned on.
EDGE_STEP_WRITES = pytest.mark.xfail(
    strict=True, reason="the edge's fingerprint and messages written in its step: known"
)


@pytest.mark.parametrize("kind", ["system", "human"])
@pytest.mark.parametrize("wiring", [pytest.param("edge", marks=EDGE_STEP_WRITES), "node"])
def test_a_branch_note_before_the_turn_leaves_it_open(
    engine: EmbeddedPolicy, wiring: str, kind: str
) -> None:
    note = (SystemMessage if kind == "system" else HumanMessage)("context: be brief", id="n1")
    ledger = Ledger()
    graph = _graph(engine, ledger, wiring, note)
    config = thread_config(f"rt59-branch-note-{wiring}-{kind}")
    out = graph.invoke({"messages": [("user", "look")]}, config, context={"user": USER})
    ids = [m.id for m in out["messages"]]
    assert ids.index("n1") < ids.index("a1")  # the note landed before the turn
    answers = [m.tool_call_id for m in out["messages"] if isinstance(m, ToolMessage)]
    assert runs_of(ledger, "r1") == 1
    assert answers == ["r1"]
