"""Red team 55: a dropped turn's sealed tools payload runs after the conversation went on,
when the caller sends it back in the same input as an edit of the conversation that takes
away what marks the turn as closed (``Command(update=..., goto=Send(...))``).

What was done (guard node and guard edge wirings, checkpointed, ``answer_open_calls`` before
the agent, the embedded engine, red team 53's policy: ``send`` is allowed until something was
read):

1. The user asks to send; the model proposes ``a1``: ``send`` ``s1`` (allowed). The caller
   streams with ``stream_mode="tasks"`` and closes the stream at the tools task's start: it
   saw the tools task's input, the guard's sealed payload.
2. A new message drops the turn (``s1`` answered "did not run"); the model reads ``r1``
   (allowed, runs) and answers. The policy now denies any ``send``.
3. The caller sends the payload back in one input with an update of the conversation:
   ``Command(update={"messages": [RemoveMessage(<the new request>), RemoveMessage(<s1's
   answer>)]}, goto=Send("tools", payload))`` (variant: the two messages replaced, under
   their ids, by model messages saying nothing). LangGraph applies the update before the
   step that runs the Send, so the tools task reads ``a1`` followed only by model messages
   and ``r1``'s answer: to ``live_turn`` a turn that is still open (a later model message
   alone does not close one), though a whole later round, the read, came after it.

Observed: ``s1`` runs, after the read that makes the policy deny it (a ``send`` the model
proposed in this conversation now would be denied), with the grant made before the read.

Expected (README): a hand-over sent back after its turn left the conversation is not acted
on; "a call runs only with an allow for exactly its arguments" under the policy for the
conversation it runs in; "a graph's caller cannot grant itself a call".
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send
from mediation_kit import USER, Ledger, Script, messages, node_graph, runs_of, thread_config, turn
from replay_kit import SEND, replay_engine, tools_input_seen

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    return replay_engine(tmp_path_factory, "redteam55_edit")


def _edit(msgs: list[Any], how: str) -> list[Any]:
    """What marks ``a1`` as closed: the request after it, and ``s1``'s answer."""
    closing = [
        m
        for m in msgs
        if (isinstance(m, HumanMessage) and m.content == "read the page first")
        or (isinstance(m, ToolMessage) and m.tool_call_id == "s1")
    ]
    assert len(closing) == 2, msgs
    if how == "remove":
        return [RemoveMessage(id=m.id) for m in closing]
    return [AIMessage("", id=m.id) for m in closing]


@pytest.mark.parametrize("how", ["remove", "replace"])
@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_payload_sent_back_with_an_edit_that_reopens_the_turn_runs_nothing(
    engine: EmbeddedPolicy, wiring: str, how: str
) -> None:
    ledger = Ledger()
    script = Script(
        [
            turn(tool_call("send", SEND, "s1"), id="a1"),
            turn(tool_call("read", {"item": "page"}, "r1"), id="a2"),
            "read it",
            "ok",
            "ok",
        ]
    )
    graph = node_graph(
        engine, script, ledger, checkpointer=InMemorySaver(), wiring=wiring, answer_open=True
    )
    config = thread_config(f"rt55-edit-{wiring}-{how}")

    async def scenario() -> None:
        payload = await tools_input_seen(graph, config)
        await asyncio.sleep(0.05)
        assert runs_of(ledger, "s1") == 0
        await graph.ainvoke(
            {"messages": [("user", "read the page first")]}, config, context={"user": USER}
        )
        assert runs_of(ledger, "r1") == 1
        update = {"messages": _edit(messages(graph, config), how)}
        await graph.ainvoke(
            Command(update=update, goto=Send("tools", payload)), config, context={"user": USER}
        )

    asyncio.run(scenario())
    assert any(
        isinstance(m, ToolMessage) and m.tool_call_id == "r1" for m in messages(graph, config)
    ), "the read is still in the conversation"
    assert runs_of(ledger, "s1") == 0, (
        "the dropped turn's send ran after the read that makes the policy deny it (the "
        f"caller's edit in the same input took away what closed the turn): {ledger.runs}"
    )
