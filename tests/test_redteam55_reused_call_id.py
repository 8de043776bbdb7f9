"""Red team 55: with a model that reuses call ids across turns, the middleware's live-turn
check takes a dropped turn's call, sent back into the run, for the open call of a later
turn, and the call runs after the conversation went on.

What was done (``create_agent`` with ``OPAGuardMiddleware``, checkpointed, the embedded
engine, red team 53's policy: ``send`` allowed until something was read; a model whose call
ids restart each turn, ``call_0``, as some OpenAI-compatible servers number them):

1. The user asks to send; the model proposes ``a1``: ``send`` ``call_0`` (allowed). The
   caller streams with ``stream_mode="tasks"`` and closes the stream at the tools task's
   start: it saw the middleware's sealed grants for ``a1`` and the call.
2. A new message drops the turn (``call_0`` of ``a1`` answered "did not run"); the model
   reads (``a2``: ``read`` ``call_0``, runs). The policy now denies any ``send``.
3. The user asks for another read; the model proposes ``a3``: ``read`` ``call_0``. The
   caller closes this stream too at the tools task's start (``a3``'s turn open).
4. The caller sends the tools node the call it saw in 1, with a state of its own (``a1``
   and its sealed grants), ``Command(goto=Send("tools", {"__type":
   "tool_call_with_context", ...}))``: ``request_turn_open`` finds the last model message
   proposing ``call_0`` (``a3``, open: a different call under the same id) and the grants
   check reads ``a1`` and its grants from the state the caller wrote.

Observed: ``send`` runs after the read that makes the policy deny it.

Expected (README): "The middleware runs a call only while a model message of the graph's
conversation proposes it and that turn is open" (no message of the conversation proposes
this ``send`` now: ``a1``'s turn left it); a hand-over sent back after its turn left the
conversation is not acted on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send
from mediation_kit import USER, Ledger, Script, mediation_tools, thread_config
from replay_kit import SEND, replay_engine
from test_redteam54_middleware_state import GRANTS, _seen_by_the_caller

from langchain_opa_guard import EmbeddedPolicy, OPAGuardMiddleware
from langchain_opa_guard.testing import ScriptedChatModel, tool_call


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    return replay_engine(tmp_path_factory, "redteam55_reused")


def _graph(engine: EmbeddedPolicy, ledger: Ledger) -> Any:
    script = Script(
        [
            AIMessage("", tool_calls=[tool_call("send", SEND, "call_0")], id="a1"),
            AIMessage("", tool_calls=[tool_call("read", {"item": "page"}, "call_0")], id="a2"),
            "read it",
            AIMessage("", tool_calls=[tool_call("read", {"item": "more"}, "call_0")], id="a3"),
            "ok",
            "ok",
            "ok",
        ]
    )
    model = ScriptedChatModel(script=[script.reply] * 16)
    tools = mediation_tools(ledger)
    return create_agent(
        model,
        tools,
        middleware=[OPAGuardMiddleware(engine, registry=tools)],
        checkpointer=InMemorySaver(),
    )


async def _stopped_at_tools(graph: Any, config: dict[str, Any], text: str) -> None:
    stream = graph.astream(
        {"messages": [("user", text)]}, config, context={"user": USER}, stream_mode="tasks"
    )
    async for event in stream:
        if event.get("name") == "tools" and "input" in event:
            break
    await stream.aclose()


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_dropped_call_sent_back_under_an_id_the_model_reused_runs_nothing(
    engine: EmbeddedPolicy, mode: str
) -> None:
    ledger = Ledger()
    graph = _graph(engine, ledger)
    config = thread_config(f"rt55-reused-{mode}")

    async def before() -> Any:
        seen = await _seen_by_the_caller(graph, config)
        await asyncio.sleep(0.05)
        await graph.ainvoke(
            {"messages": [("user", "read the page first")]}, config, context={"user": USER}
        )
        await _stopped_at_tools(graph, config, "read more")
        await asyncio.sleep(0.05)
        return seen

    grants, call = asyncio.run(before())
    assert ledger.names() == ["read"], ledger.runs
    state = {
        "messages": [HumanMessage("send b a hi"), AIMessage("", id="a1", tool_calls=[call])],
        GRANTS: grants,
    }
    replay = Command(
        goto=Send("tools", {"__type": "tool_call_with_context", "tool_call": call, "state": state})
    )
    if mode == "async":
        asyncio.run(graph.ainvoke(replay, config, context={"user": USER}))
    else:
        graph.invoke(replay, config, context={"user": USER})

    assert "send" not in ledger.names(), (
        f"the dropped turn's send ran after the read (under a reused call id): {ledger.runs}"
    )
