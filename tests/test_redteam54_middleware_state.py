"""Red team 54: the middleware's live-turn check reads which model message a call belongs to
from the state in the tools task's input, which the caller who sends it back writes.

What was done (``create_agent`` with ``OPAGuardMiddleware``, checkpointed, the embedded
engine, red team 53's policy: ``send`` allowed until something was read):

1. The user asks to send; the model proposes ``a1``: ``send`` ``s1`` (allowed). The caller
   streams with ``stream_mode="tasks"`` and closes the stream at the tools task's start: it
   saw the middleware's sealed grants (the ``after_model`` task's result) and the call (the
   tools task's input; on LangChain 1.2 a ``ToolCallWithContext`` holding both).
2. A new message drops the turn (``s1`` answered "did not run"); the model reads ``r1``.
3. The caller sends the tools node a ``ToolCallWithContext`` (the ``ToolNode`` of every
   version takes one): the call ``s1`` and a state of its own, the grants as sealed and the
   model message ``a1`` listing no calls (same id).
   ``request_turn_open`` then finds no message holding the call, takes the message id as
   unknown, and the check holds ("nothing to tell from"); the grants check wants only the
   last model message's id to be the grants' one.

Observed: ``s1`` runs after the conversation went on (after a read that makes the policy
deny it), and gets a second answer.

Expected (README, "Sealed hand-overs"): a hand-over sent back after its turn left the
conversation is not acted on at all, on every wiring; every tool call gets exactly one answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.types import Command, Send
from mediation_kit import USER, Ledger, messages, runs_of, thread_config
from replay_kit import replay_engine
from test_live_turn_wirings import _graph

from langchain_opa_guard import EmbeddedPolicy


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    return replay_engine(tmp_path_factory, "redteam54_state")


GRANTS = "opa_guard_grants"


async def _seen_by_the_caller(graph: Any, config: dict[str, Any]) -> tuple[Any, Any]:
    """Stream the first run (``tasks`` mode) up to the tools task's start: the grants the
    caller saw and the call."""
    stream = graph.astream(
        {"messages": [("user", "send b a hi")]},
        config,
        context={"user": USER},
        stream_mode="tasks",
    )
    grants = call = None
    async for event in stream:
        result = event.get("result")
        if isinstance(result, dict) and result.get(GRANTS):
            grants = result[GRANTS]
        if event.get("name") == "tools" and "input" in event:
            given = event["input"]
            if isinstance(given, dict):  # LangChain 1.2: a ToolCallWithContext
                grants, call = given["state"][GRANTS], given["tool_call"]
            else:
                (call,) = given
            break
    await stream.aclose()
    assert grants is not None and call is not None
    return grants, call


def _crafted(grants: Any, call: Any) -> dict[str, Any]:
    """The tools node's legacy input: the call, and a state whose ``a1`` lists no calls."""
    state = {"messages": [HumanMessage("send b a hi"), AIMessage("", id="a1")], GRANTS: grants}
    return {"__type": "tool_call_with_context", "tool_call": call, "state": state}


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_tools_input_sent_back_with_its_message_s_calls_dropped_runs_nothing(
    engine: EmbeddedPolicy, mode: str
) -> None:
    ledger = Ledger()
    graph = _graph("middleware", engine, ledger)
    config = thread_config(f"rt54-state-{mode}")

    async def first() -> Any:
        seen = await _seen_by_the_caller(graph, config)
        await asyncio.sleep(0.05)
        return seen

    grants, call = asyncio.run(first())
    assert runs_of(ledger, "s1") == 0
    graph.invoke({"messages": [("user", "read the page first")]}, config, context={"user": USER})
    assert runs_of(ledger, "r1") == 1
    replay = Command(goto=Send("tools", _crafted(grants, call)))
    if mode == "async":
        asyncio.run(graph.ainvoke(replay, config, context={"user": USER}))
    else:
        graph.invoke(replay, config, context={"user": USER})

    answers = [
        m for m in messages(graph, config) if isinstance(m, ToolMessage) and m.tool_call_id == "s1"
    ]
    assert runs_of(ledger, "s1") == 0, (
        "the dropped turn's send ran after the conversation went on (the caller's copy of "
        f"the state no longer listed it in a1): {ledger.runs}"
    )
    assert len(answers) == 1, [m.content for m in answers]
