"""Red team 59's pins (these pass): what was tried and holds.

- The guard's edge with a model node that writes its turn alone as an ``AIMessageChunk`` or
  a dict without an id (LangGraph gives it a new id at each reduction): the turn is found by
  its calls, its allowed call runs once and is answered once.
- A fork from the checkpoint before the model's step whose model proposes a call of a NEW
  id: the abandoned branch's tools payload sent into the fork runs nothing (its message id
  is gone and no message proposes its call).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send
from mediation_kit import READ, USER, Ledger, mediation_tools, runs_of, thread_config
from replay_kit import SEND, replay_engine

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode
from langchain_opa_guard.testing import tool_call


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    return replay_engine(tmp_path_factory, "rt59pins")


def _edge_graph(engine: EmbeddedPolicy, ledger: Ledger, turns: list[Any]) -> Any:
    it = iter(turns)
    tools = GuardedToolNode(mediation_tools(ledger))
    guard = PolicyGuardNode(engine, registry=tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [next(it, AIMessage("done"))]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("guard", guard)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("form", ["chunk", "dict"])
def test_edge_runs_a_lone_turn_without_id(engine: EmbeddedPolicy, form: str) -> None:
    call = tool_call("read", READ, "r1")
    turn: Any = (
        AIMessageChunk("", tool_calls=[call])
        if form == "chunk"
        else {"role": "assistant", "content": "", "tool_calls": [call]}
    )
    ledger = Ledger()
    graph = _edge_graph(engine, ledger, [turn])
    out = graph.invoke(
        {"messages": [("user", "look")]}, thread_config(f"rt59-pin-{form}"), context={"user": USER}
    )
    assert runs_of(ledger, "r1") == 1
    assert [m.tool_call_id for m in out["messages"] if isinstance(m, ToolMessage)] == ["r1"]


async def _tools_input(graph: Any, value: Any, config: Any) -> Any:
    stream = graph.astream(value, config, context={"user": USER}, stream_mode="tasks")
    seen = None
    async for event in stream:
        if event.get("name") == "tools" and "input" in event:
            seen = event["input"]
            break
    await stream.aclose()
    assert seen is not None
    return seen


def test_fork_with_new_call_id_runs_nothing_of_the_abandoned_payload(
    engine: EmbeddedPolicy,
) -> None:
    ledger = Ledger()
    graph = _edge_graph(
        engine,
        ledger,
        [
            AIMessage("", tool_calls=[tool_call("send", SEND, "c1")], id="a1"),
            AIMessage("", tool_calls=[tool_call("read", READ, "c2")], id="a2"),
        ],
    )
    config = thread_config("rt59-pin-fork-new-id")
    payload = asyncio.run(_tools_input(graph, {"messages": [("user", "send b a hi")]}, config))
    before_model = next(s for s in graph.get_state_history(config) if s.next == ("agent",))
    asyncio.run(_tools_input(graph, None, before_model.config))
    graph.invoke(Command(goto=Send("tools", payload)), config, context={"user": USER})
    assert runs_of(ledger, "c1") == 0, ledger.runs
