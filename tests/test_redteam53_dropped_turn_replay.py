"""Red team 53: a dropped turn's sealed tools payload, sent back by the caller after the
conversation went on, runs a call the policy in force now denies, and answers it twice.

What was done (guard node and guard edge wirings, checkpointed, ``answer_open_calls``
before the agent, as the README wires them; the embedded engine):

1. The user asks to send a message; the model proposes turn ``a1``: ``send`` to
   ``b@ok.test`` (``s1``). The policy allows it: nothing has been read yet. The caller
   streams the run with ``stream_mode="tasks"`` (a LangGraph server streams this to its API
   clients) and closes the stream at the tools task's start event, which carries that
   task's input: the guard's sealed payload. The tool has not started.
2. The caller sends a new message instead of continuing. As the README says, LangGraph
   drops the pending task and ``answer_open_calls`` answers ``s1`` "did not run: the
   conversation went on". The model then reads an item (``read`` ``r1``, allowed, runs).
3. The policy now denies any ``send`` (the conversation has read content): a ``send`` the
   model proposes now is denied and does not run (checked, as a control).
4. The caller sends the payload it saw back in: ``Command(goto=Send("tools", payload))``,
   same thread, same process, well within ``grant_ttl``, same policy revision.

Observed: the tools node takes the payload (its seal, thread, graph, age and revision all
hold; its calls never started, so no run-once claim stops them) and ``send`` runs, after the
conversation recorded it as not run, after the read that makes the policy deny it; ``s1``
then has two answers ("did not run" and "send ran").

Expected (README): "A forged, altered, replayed or stale hand-over grants nothing: its calls
are answered unrun ... or decided again"; a turn cut off and followed by a new message:
"LangGraph drops the pending task and nothing of the turn runs"; "Every tool call gets
exactly one answer". A fork from a checkpoint before the new message (documented) would run
the turn in a conversation without the read; here it runs in the live one, after it.
"""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send
from mediation_kit import (
    USER,
    Ledger,
    Script,
    messages,
    node_graph,
    runs_of,
    thread_config,
    turn,
)
from replay_kit import SEND, replay_engine, tools_input_seen

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    return replay_engine(tmp_path_factory, "redteam53_policy")


@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_a_dropped_turn_s_payload_sent_back_runs_a_denied_call(
    engine: EmbeddedPolicy, wiring: str
) -> None:
    ledger = Ledger()
    script = Script(
        [
            turn(tool_call("send", SEND, "s1"), id="a1"),
            turn(tool_call("read", {"item": "page"}, "r1"), id="a2"),
            "read it",
            turn(tool_call("send", SEND, "s3"), id="a3"),
            "ok",
            "ok",
            "ok",
        ]
    )
    graph = node_graph(
        engine,
        script,
        ledger,
        checkpointer=InMemorySaver(),
        wiring=wiring,
        answer_open=True,
    )
    config = thread_config(f"rt53-{wiring}")

    async def scenario() -> None:
        payload = await tools_input_seen(graph, config)
        await asyncio.sleep(0.05)
        assert runs_of(ledger, "s1") == 0, "the stream was closed before the tool started"

        # 2. the conversation goes on: s1 is answered as not run, then the model reads
        await graph.ainvoke(
            {"messages": [("user", "read the page first")]}, config, context={"user": USER}
        )
        assert runs_of(ledger, "r1") == 1
        # 3. control: a send proposed now is denied (the policy in force for this thread)
        await graph.ainvoke({"messages": [("user", "now send it")]}, config, context={"user": USER})
        assert runs_of(ledger, "s3") == 0
        (denial,) = [
            m
            for m in messages(graph, config)
            if isinstance(m, ToolMessage) and m.tool_call_id == "s3"
        ]
        assert denial.status == "error" and "no sending after a read" in str(denial.content)
        # 4. the caller sends the payload it saw back in
        await graph.ainvoke(Command(goto=Send("tools", payload)), config, context={"user": USER})

    asyncio.run(scenario())

    msgs = messages(graph, config)
    answers_s1 = [m for m in msgs if isinstance(m, ToolMessage) and m.tool_call_id == "s1"]
    assert runs_of(ledger, "s1") == 0, (
        "the dropped turn's send ran after the conversation went on (and after a read that "
        f"makes the policy deny it): {ledger.runs}"
    )
    assert len(answers_s1) == 1, [m.content for m in answers_s1]
    assert isinstance(msgs[-1], AIMessage)
