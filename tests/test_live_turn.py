"""A hand-over of the guard sent back into the run after its turn left the conversation.

The guard hands a decided turn on in a ``Send``: the tools node's payload, the edge's decisions
to the guard node, a turn waiting for approval (the guard node to itself). A caller who saw one
(``stream_mode="tasks"`` shows a task's input) can send it back with
``Command(goto=Send(...))`` within ``grant_ttl``. After the conversation went on without the
turn (a new message dropped it and its calls were answered "did not run"), such a hand-over is
not acted on: nothing of it runs, nothing is answered, no question is asked again
(:mod:`langchain_opa_guard.guards.live_turn`). Red team 53 found the tools payload case
(``tests/test_redteam53_dropped_turn_replay.py``); these are the guard node's own hand-overs,
and the check itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph._internal._constants import CONFIG_KEY_READ
from langgraph.types import Command, Send
from mediation_kit import (
    USER,
    Ledger,
    approval_graph,
    assert_one_answer_per_id,
    mediation_engine,  # noqa: F401 - the engine fixture
    messages,
    runs_of,
    send_and_read,
    thread_config,
)

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.guards.approval import TICKET_KEY
from langchain_opa_guard.guards.execution import call_digest
from langchain_opa_guard.guards.guard_edge import ROUTED_KEY
from langchain_opa_guard.guards.live_turn import fingerprint, turn_still_open

# -- the check ---------------------------------------------------------------------------------


def _config(live: Any) -> dict[str, Any]:
    """A task config whose channel read gives ``live`` for ``messages`` (and fails for any
    other channel, as LangGraph's does for a channel the graph lacks)."""

    def read(select: str, fresh: bool = False) -> Any:
        if select != "messages":
            raise KeyError(select)
        return live

    return {"configurable": {CONFIG_KEY_READ: read}}


TURN = AIMessage("", id="a1", tool_calls=[{"name": "t", "args": {}, "id": "c1"}])


def test_a_turn_that_ends_the_conversation_is_open() -> None:
    live = [HumanMessage("go", id="h1"), TURN]
    assert turn_still_open(_config(live), "messages", "a1", {"c1"})


def test_answers_to_the_turn_s_other_calls_leave_it_open() -> None:
    pair = [{"name": "t", "args": {}, "id": "c1"}, {"name": "t", "args": {}, "id": "c2"}]
    turn = AIMessage("", id="a1", tool_calls=pair)
    live = [HumanMessage("go"), turn, ToolMessage("denied", tool_call_id="c2")]
    assert turn_still_open(_config(live), "messages", "a1", {"c1"})


def test_a_later_round_closes_the_turn() -> None:
    """Red team 55: the caller removed the new request and the "did not run" answer; the
    read's answer (to a call the turn does not propose) still closes the turn. A model
    message with calls alone does not: another branch may propose its turn in the same step
    (red team 56)."""
    read = AIMessage("", id="a2", tool_calls=[{"name": "read", "args": {}, "id": "r1"}])
    answer = ToolMessage("page", tool_call_id="r1")
    assert not turn_still_open(_config([TURN, read, answer]), "messages", "a1", {"c1"})
    assert turn_still_open(_config([TURN, read]), "messages", "a1", {"c1"})


def test_the_conversation_before_the_turn_must_be_the_one_decided_on() -> None:
    """Red team 56: the caller moved the turn's message after a later round."""
    first = HumanMessage("go", id="h1")
    decided = fingerprint([first], TURN)
    assert turn_still_open(_config([first, TURN]), "messages", "a1", {"c1"}, before=decided)
    moved = [first, HumanMessage("read first", id="h2"), TURN]
    assert not turn_still_open(_config(moved), "messages", "a1", {"c1"}, before=decided)
    # Another branch's turn in the same step (no answer yet) is not part of it.
    other = AIMessage("", id="b1", tool_calls=[{"name": "t", "args": {}, "id": "d1"}])
    assert turn_still_open(_config([first, other, TURN]), "messages", "a1", before=decided)


def test_a_turn_whose_id_the_graph_gave_anew_is_found_by_its_calls() -> None:
    """A streamed model message without an id gets one each time LangGraph's reducer reads
    it: the edge decided it under one id and the channel holds another. The fingerprint
    holds the turn found by its calls to the turn decided."""
    first = HumanMessage("go", id="h1")
    decided = fingerprint([first], TURN)
    sent = {"c1": call_digest("t", {})}
    renamed = AIMessage("", id="a9", tool_calls=TURN.tool_calls)
    live = [first, renamed]
    assert turn_still_open(_config(live), "messages", "a1", sent, before=decided, contents=sent)
    moved = [first, HumanMessage("later", id="h2"), renamed]
    assert not turn_still_open(
        _config(moved), "messages", "a1", sent, before=decided, contents=sent
    )
    # Red team 59: another turn under the call's id (a fork that proposed another call).
    other = AIMessage("", id="a9", tool_calls=[{"name": "read", "args": {}, "id": "c1"}])
    assert not turn_still_open(
        _config([first, other]), "messages", "a1", sent, before=decided, contents=sent
    )
    # Without the calls' contents the id alone counts.
    assert not turn_still_open(_config(live), "messages", "a1", {"c1"}, before=decided)


def test_another_branch_s_answers_beside_the_turn_leave_it_open() -> None:
    """Red team 57: branches of uneven length; the other branch's turn was decided before
    this one and its answer is written in the step this turn is proposed in."""
    first = HumanMessage("go", id="h1")
    other = AIMessage("", id="b1", tool_calls=[{"name": "t", "args": {}, "id": "d1"}])
    decided = fingerprint([first, other], TURN)
    answer = ToolMessage("done", tool_call_id="d1", id="t1")
    for live in ([first, other, answer, TURN], [first, other, TURN, answer]):
        assert turn_still_open(_config(live), "messages", "a1", {"c1"}, before=decided), live


def test_a_turn_rewritten_to_propose_more_calls_is_not_the_turn_decided() -> None:
    """Red team 57: the caller rewrote the turn to propose a later round's call as well,
    so that the later round's answer would read as the turn's own."""
    first = HumanMessage("go", id="h1")
    decided = fingerprint([first], TURN)
    wider = AIMessage(
        "",
        id="a1",
        tool_calls=[
            {"name": "t", "args": {}, "id": "c1"},
            {"name": "read", "args": {}, "id": "r1"},
        ],
    )
    live = [first, wider, ToolMessage("page", tool_call_id="r1")]
    assert not turn_still_open(_config(live), "messages", "a1", {"c1"}, before=decided)


def test_a_turn_no_longer_in_the_conversation_is_closed() -> None:
    assert not turn_still_open(_config([HumanMessage("go")]), "messages", "a1", {"c1"})
    # A message of the same id that is not the model's does not stand for the turn.
    assert not turn_still_open(_config([HumanMessage("x", id="a1")]), "messages", "a1")


def test_messages_as_dicts_are_read_alike() -> None:
    ai = {"type": "ai", "id": "a1", "tool_calls": [{"name": "t", "args": {}, "id": "c1"}]}
    live = [ai, {"type": "tool", "tool_call_id": "c1"}]
    assert not turn_still_open(_config(live), "messages", "a1", {"c1"})
    assert turn_still_open(_config(live[:1]), "messages", "a1", {"c1"})


def test_where_nothing_can_be_told_it_holds() -> None:
    assert turn_still_open(None, "messages", "a1")  # outside a LangGraph task
    assert turn_still_open({"configurable": {}}, "messages", "a1")
    assert turn_still_open(_config([TURN]), "messages", None)  # a message without an id
    assert turn_still_open(_config([TURN]), "other", "a1")  # no such channel


# -- the guard node's own hand-overs, sent back ------------------------------------------------


def _seen_by_the_caller(graph: Any, config: dict[str, Any], key: str) -> dict[str, Any]:
    """Run the first turn (it pauses on the question for ``s1``) streaming its tasks, and
    keep the guard task's input that carries ``key``: what the caller saw."""
    seen = None
    for event in graph.stream(
        {"messages": [("user", "go")]}, config, context={"user": USER}, stream_mode="tasks"
    ):
        payload = event.get("input") if event.get("name") == "guard" else None
        if isinstance(payload, dict) and key in payload:
            seen = payload
    assert seen is not None, f"no guard task carried {key}"
    return seen


@pytest.mark.parametrize(
    ("kind", "key"),
    [("node", TICKET_KEY), ("edge", TICKET_KEY), ("edge", ROUTED_KEY)],
    ids=["node-ticket", "edge-ticket", "edge-routed"],
)
def test_a_dropped_turn_s_hand_over_to_the_guard_sent_back_does_nothing(
    engine: EmbeddedPolicy, kind: str, key: str
) -> None:
    """The turn ``send`` (``s1``: the policy asks a human) beside ``read`` (``r1``: allowed)
    waits for the human; the caller keeps the guard's hand-over it saw, sends a new message
    instead of an answer (the turn is dropped, its calls answered "did not run"), then sends
    the hand-over back. Nothing runs, no question is asked again, no call gets a second
    answer."""
    ledger = Ledger()
    graph = approval_graph(kind, engine, [send_and_read(), "ok", "ok", "ok"], ledger)
    config = thread_config(f"live-turn-{kind}-{key}")
    payload = _seen_by_the_caller(graph, config, key)
    graph.invoke({"messages": [("user", "never mind")]}, config, context={"user": USER})
    before = messages(graph, config)
    assert {m.tool_call_id for m in before if isinstance(m, ToolMessage)} == {"s1", "r1"}

    out = graph.invoke(Command(goto=Send("guard", payload)), config, context={"user": USER})

    assert not out.get("__interrupt__"), "the dropped turn's question was asked again"
    assert runs_of(ledger, "s1") == runs_of(ledger, "r1") == 0, ledger.runs
    after = messages(graph, config)
    assert after == before
    assert_one_answer_per_id(after)


@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_hand_over_delivered_by_langgraph_still_runs(engine: EmbeddedPolicy, kind: str) -> None:
    """Control: the same turn answered as asked runs as before (the hand-overs the check
    reads arrive while their turn ends the conversation)."""
    ledger = Ledger()
    graph = approval_graph(kind, engine, [send_and_read(), "ok", "ok", "ok"], ledger)
    config = thread_config(f"live-turn-control-{kind}")
    _seen_by_the_caller(graph, config, TICKET_KEY)
    (question,) = graph.get_state(config).interrupts
    graph.invoke(
        Command(resume={question.id: {"decisions": [{"type": "approve"}]}}),
        config,
        context={"user": USER},
    )
    assert runs_of(ledger, "s1") == runs_of(ledger, "r1") == 1, ledger.runs
    assert_one_answer_per_id(messages(graph, config))


def test_a_payload_sealed_before_fingerprints_still_verifies() -> None:
    """A run paused before its tools across an upgrade: its payload, sealed without a
    fingerprint, still carries the guard's seal; one whose fingerprint was taken out does
    not (the seal covers it)."""
    from langchain_opa_guard.guards import seals
    from langchain_opa_guard.guards.tools_payload import PAYLOAD_TYPE, calls_payload, sealed_part

    call = {"name": "t", "args": {}, "id": "c1", "type": "tool_call"}
    payload = calls_payload([call], {}, "messages", [HumanMessage("go", id="h1")], TURN)
    assert seals.sealed(PAYLOAD_TYPE, sealed_part(payload), payload["seal"])
    stripped = {k: v for k, v in payload.items() if k != "before"}
    assert not seals.sealed(PAYLOAD_TYPE, sealed_part(stripped), payload["seal"])
    # What the version before sealed: these six keys.
    keys = ("grant", "views", "message_id", "turn", "stateless", "binding")
    old = {**stripped, "seal": seals.seal(PAYLOAD_TYPE, {k: stripped.get(k) for k in keys})}
    assert seals.sealed(PAYLOAD_TYPE, sealed_part(old), old["seal"])
