"""Red team 54: hand-overs LangGraph delivers in the very next step that the live-turn check
refuses, leaving an allowed call unrun and unanswered (both ran before the check).

1. A model message stored as an ``AIMessageChunk``: an agent node that streams its model and
   returns the summed chunks, in a state whose ``messages`` reducer is ``operator.add``
   (LangGraph's older examples; ``add_messages`` would convert the chunk, a plain list keeps
   it). ``ToolNode``, ``tools_condition`` and the guard all take the chunk as the model's
   message (it is an ``AIMessage``), but ``live_turn._kind`` reads its ``type``,
   ``"AIMessageChunk"``, which is not ``"ai"``: the turn is "no longer in the conversation".
2. The guard's edge, with a parallel branch that writes a model message in the same step as
   the agent (two agents sharing the conversation): the edge hands the allowed call to the
   tools; in the next step the conversation holds the other branch's model message after
   ``a1``, which the check reads as "the conversation went on".

Observed: the tools node runs nothing and answers nothing (``r1``, allowed, has no answer);
the run goes on to the model.

Expected (README): "every tool call gets exactly one answer"; the check acts only on a
hand-over sent back after its turn left the conversation, and a hand-over LangGraph delivers
runs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
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


class ListState(TypedDict):
    messages: Annotated[list, operator.add]


def _graph(
    engine: EmbeddedPolicy,
    kind: str,
    ledger: Ledger,
    state: Any,
    first: Callable[[], AIMessage],
    beside: Callable[[Any], Any] | None = None,
) -> Any:
    tools = GuardedToolNode(mediation_tools(ledger))
    guard = PolicyGuardNode(engine, registry=tools)

    def agent(s: Any) -> dict[str, Any]:
        done = any(getattr(m, "id", None) == "a1" for m in s["messages"])
        return {"messages": [AIMessage("ok") if done else first()]}

    builder = StateGraph(state)
    builder.add_node("agent", agent)
    builder.add_node("guard", guard)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    if beside is not None:
        builder.add_node("beside", beside)
        builder.add_edge(START, "beside")
    if kind == "edge":
        builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    else:
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


def _streamed_turn() -> AIMessage:
    """The model's turn as a streaming node returns it: its chunks summed."""
    chunks = [
        AIMessageChunk(content="", id="a1"),
        AIMessageChunk(
            content="",
            id="a1",
            tool_call_chunks=[{"name": "read", "args": '{"item": "i"}', "id": "r1", "index": 0}],
        ),
    ]
    return chunks[0] + chunks[1]


def _answers(out: Any, call_id: str) -> list[Any]:
    return [m for m in out["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == call_id]


@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_streamed_turn_kept_as_a_chunk_runs(engine: EmbeddedPolicy, kind: str) -> None:
    ledger = Ledger()
    graph = _graph(engine, kind, ledger, ListState, _streamed_turn)
    out = graph.invoke(
        {"messages": [HumanMessage("go", id="h1")]},
        thread_config(f"rt54-chunk-{kind}"),
        context={"user": USER},
    )
    assert isinstance(out["messages"][1], AIMessageChunk)
    assert runs_of(ledger, "r1") == 1, "the allowed read of a streamed turn did not run"
    assert len(_answers(out, "r1")) == 1, "the allowed read was left unanswered"


def test_the_edge_s_hand_over_beside_a_parallel_model_message_runs(
    engine: EmbeddedPolicy,
) -> None:
    ledger = Ledger()

    def other_agent(s: Any) -> dict[str, Any]:  # a second agent sharing the conversation
        return {"messages": [AIMessage("noted", name="other")]}

    graph = _graph(
        engine,
        "edge",
        ledger,
        MessagesState,
        lambda: AIMessage("", id="a1", tool_calls=[tool_call("read", READ, "r1")]),
        beside=other_agent,
    )
    out = graph.invoke(
        {"messages": [HumanMessage("go", id="h1")]},
        thread_config("rt54-parallel-edge"),
        context={"user": USER},
    )
    assert runs_of(ledger, "r1") == 1, "the edge's hand-over, delivered next step, ran nothing"
    assert len(_answers(out, "r1")) == 1, "the allowed read was left unanswered"
