"""Red team 59: a model node that writes a message without an id before its turn, in the
same write, gets its turn refused by the guard's edge.

What was done: ``agent -> edge(guard) -> tools -> agent`` (``PolicyGuardNode.edge``), the
README's edge wiring. In its first step the agent node writes two messages at once: a
message without an id of its own (a request-like note as a ``("user", ...)`` tuple, or the
model's text as an OpenAI-style dict, or a streamed ``AIMessageChunk``) and then the model's
turn proposing an allowed ``read`` (``r1``), with or without an id of its own. Nothing is
sent back, nothing is edited: a single ``invoke``.

Observed: LangGraph's ``add_messages`` gives the message without an id a fresh id each time
it reduces the write (it converts a tuple, a dict or a chunk into a new message object): the
edge's view (a fresh read of the node's writes) and the channel hold different ids for it.
The hand-over's fingerprint digests the edge's ids of the messages before the turn; where
it arrives (the guard node's ``_sent_back``, ``GuardedToolNode._admit``) the graph's
conversation has the other id, ``live_turn._changed`` reports "the conversation before it
changed" and nothing of the hand-over runs. ``r1`` never runs and is never answered: the
model is called again with its call open (a provider rejects that). The guard node wiring
(``tools_condition -> guard``) runs the same flow: it reads the channel, not a fresh view.
The fix for a renamed turn (found by its calls) does not help: it is the messages before
the turn that were renamed.

Expected: the turn LangGraph delivers runs its allowed call, answered exactly once, as with
the node wiring and as when the node writes message objects.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
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


def _first_write(before: str, turn: str) -> list[Any]:
    call = tool_call("read", READ, "r1")
    note: Any = {
        "tuple": ("user", "(reminder: be brief)"),
        "dict": {"role": "assistant", "content": "let me look"},
        "chunk": AIMessageChunk("let me look"),
    }[before]
    proposing: Any = {
        "with_id": AIMessage("", tool_calls=[call], id="a1"),
        "chunk": AIMessageChunk("", tool_calls=[call]),
        "dict": {"role": "assistant", "content": "", "tool_calls": [call]},
    }[turn]
    return [note, proposing]


def _graph(engine: EmbeddedPolicy, ledger: Ledger, wiring: str, first: list[Any]) -> Any:
    tools = GuardedToolNode(mediation_tools(ledger))
    guard = PolicyGuardNode(engine, registry=tools)
    steps = {"n": 0}

    def agent(state: MessagesState) -> dict[str, Any]:
        steps["n"] += 1
        return {"messages": first if steps["n"] == 1 else [AIMessage("done")]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("guard", guard)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
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


@pytest.mark.parametrize(
    ("before", "turn"),
    [("tuple", "with_id"), ("dict", "dict"), ("chunk", "chunk"), ("tuple", "chunk")],
)
@pytest.mark.parametrize("wiring", [pytest.param("edge", marks=EDGE_STEP_WRITES), "node"])
def test_a_turn_written_after_a_message_without_id_runs(
    engine: EmbeddedPolicy, wiring: str, before: str, turn: str
) -> None:
    ledger = Ledger()
    graph = _graph(engine, ledger, wiring, _first_write(before, turn))
    config = thread_config(f"rt59-same-write-{wiring}-{before}-{turn}")
    out = graph.invoke({"messages": [("user", "look")]}, config, context={"user": USER})
    answers = [m.tool_call_id for m in out["messages"] if isinstance(m, ToolMessage)]
    assert runs_of(ledger, "r1") == 1
    assert answers == ["r1"]


@pytest.mark.parametrize("wiring", [pytest.param("edge", marks=EDGE_STEP_WRITES), "node"])
def test_a_turn_written_after_a_message_without_id_runs_async(
    engine: EmbeddedPolicy, wiring: str
) -> None:
    ledger = Ledger()
    graph = _graph(engine, ledger, wiring, _first_write("tuple", "with_id"))
    config = thread_config(f"rt59-same-write-async-{wiring}")
    out = asyncio.run(
        graph.ainvoke({"messages": [("user", "look")]}, config, context={"user": USER})
    )
    answers = [m.tool_call_id for m in out["messages"] if isinstance(m, ToolMessage)]
    assert runs_of(ledger, "r1") == 1
    assert answers == ["r1"]
