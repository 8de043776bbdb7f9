"""Red team 56: what was tried and held (these pass).

1. The moved-turn replay (``tests/test_redteam56_moved_turn_replay.py``) on the
   ``ToolCallGuard`` interceptor (LangGraph's prebuilt agent): the tools task's input a caller
   saw, sent back with the dropped turn's model message moved to the end of the conversation.
   The interceptor decides the call on the conversation the graph holds, where the read now
   comes before the turn: the send is denied and does not run.
2. A model call without an id (``"id": None``) on the guard node: answered (not run), never
   left without an answer by the live-turn check (``str(None)`` vs the guard's ``""``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, RemoveMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send
from mediation_kit import (
    POLICY,
    READ,
    USER,
    Ledger,
    Script,
    messages,
    node_graph,
    runs_of,
    thread_config,
)
from opa_process import ROOT
from replay_kit import replay_engine, tools_input_seen
from test_live_turn_wirings import _graph

from langchain_opa_guard import EmbeddedPolicy


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    return replay_engine(tmp_path_factory, "redteam56_pins")


def test_interceptor_decides_a_moved_turn_on_the_graph_s_conversation(
    engine: EmbeddedPolicy,
) -> None:
    ledger = Ledger()
    graph = _graph("interceptor-react", engine, ledger)
    config = thread_config("rt56-pin-moved-interceptor")

    async def before() -> Any:
        seen = await tools_input_seen(graph, config)
        await asyncio.sleep(0.05)
        await graph.ainvoke(
            {"messages": [("user", "read the page first")]}, config, context={"user": USER}
        )
        return seen

    seen = asyncio.run(before())
    assert runs_of(ledger, "s1") == 0 and runs_of(ledger, "r1") == 1, ledger.runs
    (a1,) = [
        m
        for m in messages(graph, config)
        if isinstance(m, AIMessage) and any(c["id"] == "s1" for c in m.tool_calls)
    ]
    update = [("messages", [RemoveMessage(id=a1.id)]), ("messages", [a1])]
    graph.invoke(Command(update=update, goto=Send("tools", seen)), config, context={"user": USER})
    assert runs_of(ledger, "s1") == 0, ledger.runs


def test_a_call_without_an_id_is_answered_on_the_guard_node() -> None:
    mediation = EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)
    ledger = Ledger()
    message = AIMessage(
        "", tool_calls=[{"name": "read", "args": READ, "id": None, "type": "tool_call"}], id="a1"
    )
    graph = node_graph(
        mediation, Script([message, "ok"]), ledger, checkpointer=InMemorySaver(), wiring="node"
    )
    out = graph.invoke(
        {"messages": [("user", "go")]}, thread_config("rt56-pin-no-id"), context={"user": USER}
    )
    assert ledger.runs == []
    answers = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert len(answers) == 1 and answers[0].status == "error", answers
