"""Red team 54: the guard node's turn waiting for approval (its ticket), sent back into the
run, is acted on where the README says it is not: ``PolicyGuardNode._sent_back`` reads the
model message's id with ``getattr`` and asks ``turn_still_open`` with no call ids.

1. Sent back after the reviewer rejected its call, while the rest of the turn waits in a
   tool's own ``interrupt()`` (guard node and edge, checkpointed, the mediation policy): the
   model proposes ``a1``: ``send`` ``s1`` (the policy asks) and ``read`` ``r1`` (allowed; the
   tool asks its own confirmation). The caller streams with ``stream_mode="tasks"`` and keeps
   the guard task's input that carries the ticket. The reviewer rejects ``s1`` (answered
   "rejected"); ``read`` waits in its ``interrupt()``. The caller sends the ticket back,
   ``Command(goto=Send("guard", ticket))``.
   Observed: the answer to ``s1`` (one of the ticket's calls) is not looked at; the ticket
   (sealed, no time limit) is taken and the reviewer is asked about the rejected ``s1``
   again. (Approved, the tools node's own check then drops the call: nothing runs, the
   approval is silently lost.)
2. Sent back after a new message dropped the turn, with the ticket's model message as plain
   JSON (``model_dump(mode="json")``: what a LangGraph server's API client sends, every
   payload being JSON there): the seal still verifies (it covers the message's fields), but
   ``getattr(dict, "id")`` is ``None``, which ``turn_still_open`` takes as "cannot be told".
   Observed: the dropped turn's question is asked again; an approval then fails the run
   (``AttributeError: 'dict' object has no attribute 'tool_calls'``).

Expected (README, "Sealed hand-overs"): a hand-over whose model message is followed by a
request, a later model message or "an answer to one of the hand-over's calls" is not acted
on: nothing of it runs, nothing is answered, no question is asked again.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langgraph.types import Command, Send
from mediation_kit import (
    APPROVE,
    REJECT,
    USER,
    Ledger,
    approval_graph,
    confirming_read,
    mediation_engine,  # noqa: F401 - the engine fixture
    messages,
    runs_of,
    send_and_read,
    thread_config,
)
from test_live_turn import _seen_by_the_caller

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.guards.approval import TICKET_KEY


def _ticket_seen(graph: Any, config: dict[str, Any]) -> tuple[Any, Any]:
    seen = None
    for event in graph.stream(
        {"messages": [("user", "go")]}, config, context={"user": USER}, stream_mode="tasks"
    ):
        payload = event.get("input") if event.get("name") == "guard" else None
        if isinstance(payload, dict) and TICKET_KEY in payload:
            seen = payload
    assert seen is not None
    (question,) = graph.get_state(config).interrupts
    return seen, question


@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_ticket_sent_back_after_its_call_was_rejected_is_not_acted_on(
    engine: EmbeddedPolicy, kind: str
) -> None:
    ledger = Ledger()
    graph = approval_graph(
        kind, engine, [send_and_read(), "ok", "ok"], ledger, read_tool=confirming_read(ledger)
    )
    config = thread_config(f"rt54-ticket-{kind}")
    ticket, question = _ticket_seen(graph, config)
    graph.invoke(Command(resume={question.id: REJECT}), config, context={"user": USER})
    rejected = [
        m for m in messages(graph, config) if isinstance(m, ToolMessage) and m.tool_call_id == "s1"
    ]
    assert len(rejected) == 1 and rejected[0].status == "error"
    waiting = graph.get_state(config).interrupts
    assert [w.value for w in waiting] == [{"confirm": "r1"}], waiting

    out = graph.invoke(Command(goto=Send("guard", ticket)), config, context={"user": USER})
    asked = [
        i
        for i in out.get("__interrupt__", ())
        if isinstance(i.value, dict) and "requests" in i.value
    ]
    for again in asked:  # the reviewer approves what they are asked now
        graph.invoke(Command(resume={again.id: APPROVE}), config, context={"user": USER})

    answers = [
        m for m in messages(graph, config) if isinstance(m, ToolMessage) and m.tool_call_id == "s1"
    ]
    assert runs_of(ledger, "s1") == 0, f"the rejected send ran: {ledger.runs}"
    assert len(answers) == 1, [m.content for m in answers]
    assert not asked, "the rejected call's question was asked again"


@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_dropped_turn_s_ticket_sent_back_as_json_asks_nothing(
    engine: EmbeddedPolicy, kind: str
) -> None:
    ledger = Ledger()
    graph = approval_graph(kind, engine, [send_and_read(), "ok", "ok", "ok"], ledger)
    config = thread_config(f"rt54-json-ticket-{kind}")
    payload = _seen_by_the_caller(graph, config, TICKET_KEY)
    graph.invoke({"messages": [("user", "never mind")]}, config, context={"user": USER})
    before = messages(graph, config)
    ticket = dict(payload[TICKET_KEY])
    ticket["ai_message"] = ticket["ai_message"].model_dump(mode="json")

    out = graph.invoke(
        Command(goto=Send("guard", {**payload, TICKET_KEY: ticket})),
        config,
        context={"user": USER},
    )

    assert not out.get("__interrupt__"), "the dropped turn's question was asked again"
    assert runs_of(ledger, "s1") == runs_of(ledger, "r1") == 0, ledger.runs
    assert messages(graph, config) == before
