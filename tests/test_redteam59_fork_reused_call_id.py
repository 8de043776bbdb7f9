"""Red team 59: a hand-over of a turn that a fork replaced runs in the fork, under the new
turn's call of the same id.

What was done: red team 53's replay policy (a send is allowed until something was read). The
model proposed ``a1``: ``send`` ``c1`` to b@ok.test; the guard granted it and the caller,
streaming (``stream_mode="tasks"``), saw the tools payload and closed the stream before the
tools ran. The caller then forked the thread from the checkpoint before the model's step
(its ``checkpoint_id``) and ran it again: the model answered this time with ``a2``, a
``read`` under the same call id ``c1`` (models that number their calls, ``call_0``, reuse
ids), and the caller closed that stream too at the tools' start. It then sent the first
payload into the thread, now at the fork's head: ``Command(goto=Send("tools", payload))``.

Observed: ``a1`` is not in the fork's conversation. Since the last commit
(``live_turn.turn_still_open``: a turn whose model message is not there is looked for by its
calls, for a message LangGraph renamed), the hand-over's turn is taken to be ``a2``, which
proposes ``c1`` after the same messages (the fingerprint holds: same messages before, no
calls beyond ``c1``), and the send of the abandoned branch runs: the fork's ``read`` call is
answered "send ran". The hand-over was made for a turn no message of this conversation
holds (its message id is gone for good, not renamed), and the call that ran is one no
message of the conversation proposes. Node and edge wirings alike.

Expected: as before that commit, and as for any turn that left the conversation: nothing of
the first payload runs (the fork's own read may run or be left open; the send never).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import Command, Send
from mediation_kit import READ, USER, Ledger, mediation_tools, runs_of, thread_config
from replay_kit import SEND, replay_engine

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode
from langchain_opa_guard.testing import tool_call


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    return replay_engine(tmp_path_factory, "rt59fork")


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


def _graph(engine: EmbeddedPolicy, ledger: Ledger, wiring: str) -> Any:
    turns = iter(
        [
            AIMessage("", tool_calls=[tool_call("send", SEND, "c1")], id="a1"),
            AIMessage("", tool_calls=[tool_call("read", READ, "c1")], id="a2"),
        ]
    )
    tools = GuardedToolNode(mediation_tools(ledger))
    guard = PolicyGuardNode(engine, registry=tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [next(turns, AIMessage("done"))]}

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


@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_a_payload_of_the_abandoned_branch_runs_nothing_in_the_fork(
    engine: EmbeddedPolicy, wiring: str
) -> None:
    ledger = Ledger()
    graph = _graph(engine, ledger, wiring)
    config = thread_config(f"rt59-fork-reused-{wiring}")
    payload = asyncio.run(_tools_input(graph, {"messages": [("user", "send b a hi")]}, config))
    assert [c["name"] for c in payload["calls"]] == ["send"] and not ledger.runs
    before_model = next(s for s in graph.get_state_history(config) if s.next == ("agent",))
    fork = asyncio.run(_tools_input(graph, None, before_model.config))
    assert [c["name"] for c in fork["calls"]] == ["read"] and not ledger.runs
    head = graph.get_state(config).values["messages"]
    assert [m.id for m in head][1:] == ["a2"]  # the fork's head: a1 is gone

    out = graph.invoke(Command(goto=Send("tools", payload)), config, context={"user": USER})

    assert runs_of(ledger, "c1") == 0 or [n for n, _, _ in ledger.runs] == ["read"], ledger.runs
    sent = [m.content for m in out["messages"] if isinstance(m, ToolMessage)]
    assert "send ran" not in sent, sent
