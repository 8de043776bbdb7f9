"""Red team 41: a resume that also routes (``Command(resume=..., goto=...)``) or writes
(``Command(resume=..., update=...)``), and a plain ``Command(goto=...)`` into a paused turn.

LangGraph takes ``goto`` and ``update`` from whoever sends the run's input (a LangGraph
server takes them from its API clients, and LangGraph Studio sends them); the README's
sealed hand-overs treat that caller as untrusted. The turn here is ``send`` to
``a@ask.test`` (``s1``: the policy asks a human) beside ``read`` (``r1``: allowed); the graph
pauses once for ``s1`` before anything of the turn runs.

Findings (sync and async; 1 and 2 run calls twice or before the answer, 3 and 4 leave the
history out of order, as a caller who writes messages could anyway, but the guard's own
answers are what is misplaced). All four are known and open, marked strict xfail (a rule
that refused the second guard task of 1 was tried and taken out again: red teams 43 and
44 found legitimate runs it left undecided):

1. Guard node and guard edge, ``Command(resume={id: approve}, goto="guard")``: the guard
   runs again on the same model turn while the resumed turn runs, and asks about ``s1`` a
   second time. Observed: ``read`` and ``send`` ran, then, whatever the second answer
   (here a rejection), ``read`` ran again (approved: ``send`` too), and every call of the
   turn has two answers. Expected (README "Nothing runs twice"): each call runs at most
   once and gets one answer.
2. ``create_agent`` middleware, ``Command(goto="tools")`` while the turn waits: ``read``
   runs before the question is answered (README: "before anything of the turn runs"), and
   it writes no answer; answering the question then runs ``read`` again.
   ``Command(resume={id: approve}, goto="tools")`` runs ``read`` twice and answers ``s1`` and
   ``r1`` twice each (``s1``: "needs a human's approval" and "send ran").
3. Every wiring, ``Command(resume={id: ...}, goto=<the model node>)``: the model is called
   before the turn's answers are written, so its calls are not answered when the model
   reads them, and the answers land after the model's next message (an invalid history
   for OpenAI-style APIs). On the middleware an approved ``s1`` is then answered "needs a
   human's approval" and does not run.
4. Guard node and guard edge, ``Command(resume={id: approve}, update={"messages":
   [HumanMessage("stop")]})``: the send runs and its answer is written after the user's
   new message (the middleware drops the turn instead), so the turn's calls are not followed
   by their answers.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.types import Command
from mediation_kit import (
    APPROVE,
    GOTO_GUARD_DECIDES_AGAIN,
    REJECT,
    assert_one_answer_per_id,
    mediation_engine,  # noqa: F401 - the engine fixture
    messages,
    paused,
    reject_all,
    run,
    runs_of,
)

from langchain_opa_guard import EmbeddedPolicy

MODES = ("sync", "async")
MODEL_NODE = {"node": "agent", "edge": "agent", "middleware": "model"}


# Findings 2 to 4 are known and open (README, "Human approval"): strict, so that the day they
# are fixed these are turned on.
OPEN = pytest.mark.xfail(
    strict=True, reason="a Command(goto=...)/update= sent with a resume: known, not fixed"
)


# -- 1. goto the guard with the answer --------------------------------------------------------


@GOTO_GUARD_DECIDES_AGAIN
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_resume_that_also_goes_to_the_guard_runs_the_turn_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    graph, ledger, config, question = paused(kind, engine, mode, f"rt41-goto-guard-{kind}-{mode}")
    run(graph, Command(resume={question.id: APPROVE}, goto="guard"), config, mode)
    reject_all(graph, config, mode)  # a second question about s1, if any: rejected
    assert runs_of(ledger, "r1") == 1, f"the allowed read ran again: {ledger.runs}"
    assert runs_of(ledger, "s1") == 1, ledger.runs
    assert_one_answer_per_id(messages(graph, config))


# -- 2. goto the tools while the middleware's turn waits --------------------------------------


@OPEN
@pytest.mark.parametrize("mode", MODES)
def test_a_goto_tools_into_the_waiting_turn_runs_nothing_before_the_answer(
    engine: EmbeddedPolicy, mode: str
) -> None:
    graph, ledger, config, _ = paused(
        "middleware", engine, mode, f"rt41-goto-tools-middleware-{mode}"
    )
    with contextlib.suppress(Exception):  # refusing it is fine
        run(graph, Command(goto="tools"), config, mode)
    assert ledger.runs == [], f"a call of the waiting turn ran before the answer: {ledger.runs}"
    state = graph.get_state(config)
    if state.interrupts:
        (question,) = state.interrupts
        run(graph, Command(resume={question.id: APPROVE}), config, mode)
    assert runs_of(ledger, "r1") <= 1, ledger.runs
    assert runs_of(ledger, "s1") <= 1, ledger.runs
    run(graph, {"messages": [("user", "next")]}, config, mode)
    assert_one_answer_per_id(messages(graph, config))


@OPEN
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("answer", [APPROVE, REJECT], ids=["approve", "reject"])
def test_a_resume_that_also_goes_to_the_tools_runs_each_call_once(
    engine: EmbeddedPolicy, mode: str, answer: Any
) -> None:
    graph, ledger, config, question = paused(
        "middleware", engine, mode, f"rt41-resume-goto-tools-{id(answer)}-middleware-{mode}"
    )
    run(graph, Command(resume={question.id: answer}, goto="tools"), config, mode)
    assert runs_of(ledger, "r1") == 1, f"the allowed read ran {runs_of(ledger, 'r1')} times"
    assert runs_of(ledger, "s1") == (1 if answer is APPROVE else 0), ledger.runs
    assert_one_answer_per_id(messages(graph, config))


# -- 3. goto the model with the answer ---------------------------------------------------------


@OPEN
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["node", "edge", "middleware"])
def test_a_resume_that_also_goes_to_the_model_keeps_the_turn_answered_first(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    graph, ledger, config, question = paused(kind, engine, mode, f"rt41-goto-model-{kind}-{mode}")
    run(graph, Command(resume={question.id: APPROVE}, goto=MODEL_NODE[kind]), config, mode)
    reject_all(graph, config, mode)
    assert runs_of(ledger, "r1") <= 1 and runs_of(ledger, "s1") <= 1, ledger.runs
    history = messages(graph, config)
    assert_one_answer_per_id(history)  # the model never reads the turn unanswered


# -- 4. a new user message with the answer ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "kind", [pytest.param("node", marks=OPEN), pytest.param("edge", marks=OPEN), "middleware"]
)
def test_a_resume_that_also_writes_a_user_message_keeps_the_answers_after_the_turn(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    graph, ledger, config, question = paused(kind, engine, mode, f"rt41-update-human-{kind}-{mode}")
    stop = HumanMessage("stop, do not send anything")
    run(graph, Command(resume={question.id: APPROVE}, update={"messages": [stop]}), config, mode)
    reject_all(graph, config, mode)
    assert runs_of(ledger, "r1") <= 1 and runs_of(ledger, "s1") <= 1, ledger.runs
    history = messages(graph, config)
    (index,) = [i for i, m in enumerate(history) if isinstance(m, AIMessage) and m.id == "a1"]
    following = history[index + 1 : index + 3]
    assert sorted(getattr(m, "tool_call_id", "") for m in following) == ["r1", "s1"], [
        f"{type(m).__name__}:{getattr(m, 'tool_call_id', '') or m.content}" for m in history
    ]
    assert_one_answer_per_id(history)
