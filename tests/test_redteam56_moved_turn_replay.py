"""Red team 56: a dropped turn's sealed hand-over runs after the conversation went on, when
the caller sends it back in the same input as an edit that MOVES the turn's model message to
the end of the conversation (after the later round that closed it), instead of removing
what follows it (red team 55).

What was done (the embedded engine, red team 53's policy: ``send`` is allowed until something
was read; checkpointed; guard node and guard edge with ``answer_open_calls``, and
``create_agent`` with ``OPAGuardMiddleware``):

1. The user asks to send; the model proposes ``a1``: ``send`` ``s1`` (allowed). The caller
   streams with ``stream_mode="tasks"`` and closes the stream at the tools task's start: it
   saw the tools task's input (the guard's sealed payload; for the middleware its sealed
   grants and the call).
2. A new message drops the turn (``s1`` answered "did not run"); the model reads ``r1``
   (allowed, runs) and answers. The policy now denies any ``send``.
3. The caller sends the hand-over back in one input whose update takes ``a1`` out and puts
   the same message back (same id, same calls) at the end:
   ``Command(update=[("messages", [RemoveMessage("a1")]), ("messages", [a1])],
   goto=Send("tools", ...))`` (LangGraph applies the two writes in order). Nothing after
   ``a1`` is left to close the turn: the request, the read and ``s1``'s "did not run" answer
   are all BEFORE it now, and ``live_turn`` looks only after the turn's message.

Observed: ``s1`` runs, in a conversation where the read comes before it (a ``send`` the model
proposed there now would be denied), with the grant made before the read; ``s1`` has two
answers ("did not run" and "send ran"). Sync and async alike.

Expected (README, "Sealed hand-overs"): a hand-over sent back after its turn left the
conversation is not acted on ("nothing of it runs, nothing is answered"); "a graph's caller
cannot grant itself a call"; every tool call gets exactly one answer. (Moving the turn does
not put it back where it was decided: the grant was made for the conversation before the
read, and the turn now follows it.)
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
from test_live_turn_wirings import _graph
from test_redteam54_middleware_state import GRANTS, _seen_by_the_caller

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    return replay_engine(tmp_path_factory, "redteam56_moved")


def _moved_to_the_end(msgs: list[Any]) -> tuple[AIMessage, list[tuple[str, Any]]]:
    """The turn proposing ``s1``, and the update that takes it out and appends it again."""
    (a1,) = [
        m for m in msgs if isinstance(m, AIMessage) and any(c["id"] == "s1" for c in m.tool_calls)
    ]
    return a1, [("messages", [RemoveMessage(id=a1.id)]), ("messages", [a1])]


def _run(graph: Any, value: Any, config: dict[str, Any], mode: str) -> None:
    if mode == "async":
        asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
    else:
        graph.invoke(value, config, context={"user": USER})


def _check(graph: Any, config: dict[str, Any], ledger: Ledger, *, decided: bool = False) -> None:
    """Nothing ran; ``s1`` has its one answer, or (``decided``) answers besides its first
    that are all the policy's denial: the middleware decides a call of an open turn it has
    no grant for, and a caller who moves the turn's message makes it an open turn again
    (a caller who writes messages can add answers of its own anyway)."""
    msgs = messages(graph, config)
    at = {m.id: i for i, m in enumerate(msgs)}
    read = next(
        i for i, m in enumerate(msgs) if isinstance(m, ToolMessage) and m.tool_call_id == "r1"
    )
    answers = [m for m in msgs if isinstance(m, ToolMessage) and m.tool_call_id == "s1"]
    assert read < max(at.values()), "the read is still in the conversation"
    assert runs_of(ledger, "s1") == 0, (
        "the dropped turn's send ran after the read that makes the policy deny it (the "
        f"caller moved the turn's message to the end of the conversation): {ledger.runs}"
    )
    if decided:
        assert all("no sending after a read" in str(m.content) for m in answers[1:]), [
            m.content for m in answers
        ]
    else:
        assert len(answers) == 1, [m.content for m in answers]


@pytest.mark.parametrize("mode", ["async", "sync"])
@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_tools_payload_sent_back_with_its_turn_moved_to_the_end_runs_nothing(
    engine: EmbeddedPolicy, wiring: str, mode: str
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
    config = thread_config(f"rt56-moved-{wiring}-{mode}")

    async def before() -> dict[str, Any]:
        payload = await tools_input_seen(graph, config)
        await asyncio.sleep(0.05)
        await graph.ainvoke(
            {"messages": [("user", "read the page first")]}, config, context={"user": USER}
        )
        return payload

    payload = asyncio.run(before())
    assert runs_of(ledger, "s1") == 0 and runs_of(ledger, "r1") == 1, ledger.runs
    _, update = _moved_to_the_end(messages(graph, config))
    _run(graph, Command(update=update, goto=Send("tools", payload)), config, mode)
    _check(graph, config, ledger)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_middleware_call_sent_back_with_its_turn_moved_to_the_end_runs_nothing(
    engine: EmbeddedPolicy, mode: str
) -> None:
    ledger = Ledger()
    graph = _graph("middleware", engine, ledger)
    config = thread_config(f"rt56-moved-middleware-{mode}")

    async def before() -> Any:
        seen = await _seen_by_the_caller(graph, config)
        await asyncio.sleep(0.05)
        await graph.ainvoke(
            {"messages": [("user", "read the page first")]}, config, context={"user": USER}
        )
        return seen

    grants, call = asyncio.run(before())
    assert runs_of(ledger, "s1") == 0 and runs_of(ledger, "r1") == 1, ledger.runs
    a1, update = _moved_to_the_end(messages(graph, config))
    state = {"messages": [HumanMessage("send b a hi"), a1], GRANTS: grants}
    given = {"__type": "tool_call_with_context", "tool_call": call, "state": state}
    _run(graph, Command(update=update, goto=Send("tools", given)), config, mode)
    _check(graph, config, ledger, decided=True)
