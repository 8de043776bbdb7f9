"""Red team 44: attacks on the "turn still out" rule that held (all pass here).

1. ``Command(resume={id: approve}, goto=Send("guard", {"messages": [<user>, <a note>,
   <a1>]}))``: the plain guard task, given a state with one more message before the turn,
   decides the turn again and asks about ``s1`` a second time, but once that second
   question is approved nothing of the turn runs twice and no call is answered twice.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage
from langgraph.types import Command, Send
from mediation_kit import (
    APPROVE,
    answers_after,
    approve_all,
    mediation_engine,  # noqa: F401 - the engine fixture
    messages,
    paused,
    run,
    runs_of,
)

from langchain_opa_guard import EmbeddedPolicy


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_resume_with_a_send_to_the_guard_with_a_message_inserted_runs_the_turn_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    graph, ledger, config, question = paused(kind, engine, mode, f"rt44-pin-send-{kind}-{mode}")
    user, ai = messages(graph, config)
    state = {"messages": [user, HumanMessage("(note)", id="note-1"), ai]}
    run(graph, Command(resume={question.id: APPROVE}, goto=Send("guard", state)), config, mode)
    approve_all(graph, config, mode)
    # (Since the live-turn check: the approval may answer the question of the guard task
    # given the caller's state, whose hand-over is not the graph's conversation's and runs
    # nothing; either way nothing runs twice and no call has two answers.)
    assert runs_of(ledger, "r1") <= 1 and runs_of(ledger, "s1") <= 1, ledger.runs
    answers = answers_after(messages(graph, config), "a1")
    assert len(answers) == len(set(answers)) and set(answers) <= {"r1", "s1"}, answers
