"""Red team 41: a resume that also routes (``Command(resume=..., goto=...)``) or writes
(``Command(resume=..., update=...)``), and a plain ``Command(goto=...)`` into a paused turn.

LangGraph takes ``goto`` and ``update`` from whoever sends the run's input (a LangGraph
server takes them from its API clients, and LangGraph Studio sends them); the README's
sealed hand-overs treat that caller as untrusted. The turn here is ``send`` to
``a@ask.test`` (``s1``: the policy asks a human) beside ``read`` (``r1``: allowed); the graph
pauses once for ``s1`` before anything of the turn runs.

Findings (sync and async; 1 and 2 run calls twice or before the answer, 3 and 4 leave the
history out of order, as a caller who writes messages could anyway, but the guard's own
answers are what is misplaced). 1 is fixed: a guard node that finds a turn it handed on at
an earlier step of the thread decides nothing (``guards/handed_on.py``); 2 to 4 are known
and open, marked strict xfail:

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

import asyncio
import contextlib
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import (
    POLICY,
    USER,
    Ledger,
    Script,
    agent_graph,
    assert_one_answer_per_id,
    node_graph,
)
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call

MODES = ("sync", "async")
ASK = {"to": "a@ask.test", "body": "x"}
READ = {"item": "i"}
APPROVE = {"decisions": [{"type": "approve"}]}
REJECT = {"decisions": [{"type": "reject", "message": "no"}]}
MODEL_NODE = {"node": "agent", "edge": "agent", "middleware": "model"}


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def build(kind: str, engine: Any, ledger: Ledger) -> Any:
    first = AIMessage(
        "", tool_calls=[tool_call("send", ASK, "s1"), tool_call("read", READ, "r1")], id="a1"
    )
    script = Script([first, "ok", "ok", "ok"])
    if kind == "middleware":
        return agent_graph(engine, script, ledger, checkpointer=InMemorySaver())
    return node_graph(
        engine, script, ledger, checkpointer=InMemorySaver(), wiring=kind, answer_open=True
    )


def run(graph: Any, value: Any, config: Any, mode: str) -> Any:
    if mode == "async":
        return asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
    return graph.invoke(value, config, context={"user": USER})


def start(kind: str, engine: Any, mode: str, name: str) -> tuple[Any, Ledger, Any, Any]:
    ledger = Ledger()
    graph = build(kind, engine, ledger)
    config = {"configurable": {"thread_id": f"rt41-{name}-{kind}-{mode}"}}
    (question,) = run(graph, {"messages": [("user", "go")]}, config, mode)["__interrupt__"]
    assert ledger.runs == []
    return graph, ledger, config, question


def reject_what_is_asked(graph: Any, config: Any, mode: str) -> None:
    for _ in range(4):
        state = graph.get_state(config)
        if not state.interrupts:
            return
        answer = {
            i.id: {"decisions": [{"type": "reject"}] * len(i.value["requests"])}
            for i in state.interrupts
        }
        run(graph, Command(resume=answer), config, mode)


def messages(graph: Any, config: Any) -> list[BaseMessage]:
    return list(graph.get_state(config).values["messages"])


def runs_of(ledger: Ledger, call_id: str) -> int:
    return sum(1 for _, i, _ in ledger.runs if i == call_id)


# Findings 2 to 4 are known and open (README, "Human approval"): strict, so that the day they
# are fixed these are turned on.
OPEN = pytest.mark.xfail(
    strict=True, reason="a Command(goto=...)/update= sent with a resume: known, not fixed"
)


# -- 1. goto the guard with the answer --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_resume_that_also_goes_to_the_guard_runs_the_turn_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    graph, ledger, config, question = start(kind, engine, mode, "goto-guard")
    run(graph, Command(resume={question.id: APPROVE}, goto="guard"), config, mode)
    reject_what_is_asked(graph, config, mode)  # a second question about s1, if any: rejected
    assert runs_of(ledger, "r1") == 1, f"the allowed read ran again: {ledger.runs}"
    assert runs_of(ledger, "s1") == 1, ledger.runs
    assert_one_answer_per_id(messages(graph, config))


# -- 2. goto the tools while the middleware's turn waits --------------------------------------


@OPEN
@pytest.mark.parametrize("mode", MODES)
def test_a_goto_tools_into_the_waiting_turn_runs_nothing_before_the_answer(
    engine: EmbeddedPolicy, mode: str
) -> None:
    graph, ledger, config, _ = start("middleware", engine, mode, "goto-tools")
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
    graph, ledger, config, question = start(
        "middleware", engine, mode, f"resume-goto-tools-{id(answer)}"
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
    graph, ledger, config, question = start(kind, engine, mode, "goto-model")
    run(graph, Command(resume={question.id: APPROVE}, goto=MODEL_NODE[kind]), config, mode)
    reject_what_is_asked(graph, config, mode)
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
    graph, ledger, config, question = start(kind, engine, mode, "update-human")
    stop = HumanMessage("stop, do not send anything")
    run(graph, Command(resume={question.id: APPROVE}, update={"messages": [stop]}), config, mode)
    reject_what_is_asked(graph, config, mode)
    assert runs_of(ledger, "r1") <= 1 and runs_of(ledger, "s1") <= 1, ledger.runs
    history = messages(graph, config)
    (index,) = [i for i, m in enumerate(history) if isinstance(m, AIMessage) and m.id == "a1"]
    following = history[index + 1 : index + 3]
    assert sorted(getattr(m, "tool_call_id", "") for m in following) == ["r1", "s1"], [
        f"{type(m).__name__}:{getattr(m, 'tool_call_id', '') or m.content}" for m in history
    ]
    assert_one_answer_per_id(history)
