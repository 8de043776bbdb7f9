"""A ``Command(goto="guard")`` sent into a run paused on a question, and a replay.

``Command(goto="guard")`` alone, while a question waits, runs nothing of the turn: one
question stays open, and the answer runs each call once. (Sent *with* the resume, the
second guard task decides the turn again: known and open, see
``mediation_kit.GOTO_GUARD_DECIDES_AGAIN`` and red teams 41, 43 and 44.) A replay from a
checkpoint before the decision decides the turn, and asks, again.
"""

from __future__ import annotations

import pytest
from langgraph.types import Command
from mediation_kit import (
    APPROVE,
    USER,
    assert_one_answer_per_id,
    mediation_engine,  # noqa: F401 - the engine fixture
    paused,
)

from langchain_opa_guard import EmbeddedPolicy


@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_goto_into_the_waiting_turn_runs_nothing_before_the_answer(
    engine: EmbeddedPolicy, kind: str
) -> None:
    graph, ledger, config, _ = paused(kind, engine, "sync", f"handed-on-goto-{kind}")
    graph.invoke(Command(goto="guard"), config, context={"user": USER})
    assert ledger.runs == []
    (question,) = graph.get_state(config).interrupts  # still the one question
    graph.invoke(Command(resume={question.id: APPROVE}), config, context={"user": USER})
    assert sorted(i for _, i, _ in ledger.runs) == ["r1", "s1"]
    assert_one_answer_per_id(graph.get_state(config).values["messages"])


@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_replay_from_before_the_decision_decides_the_turn_again(
    engine: EmbeddedPolicy, kind: str
) -> None:
    """Time travel to the checkpoint the decision was made from: LangGraph runs the guard at
    the same step again, so the turn is decided (and its question asked) again."""
    graph, ledger, config, _ = paused(kind, engine, "sync", f"handed-on-replay-{kind}")
    (question,) = graph.get_state(config).interrupts
    graph.invoke(Command(resume={question.id: APPROVE}), config, context={"user": USER})
    assert sorted(i for _, i, _ in ledger.runs) == ["r1", "s1"]
    # The first checkpoint whose next step is the guard: the step the turn was decided in
    # (the edge's decisions ride along to the guard node in its Send).
    before = [s for s in graph.get_state_history(config) if s.next == ("guard",)][-1]
    out = graph.invoke(None, before.config, context={"user": USER})
    assert out.get("__interrupt__"), "the replayed turn asks the human again"
