"""Red team 39: a new message written with ``Command(update=...)`` (or ``update_state`` as the
model) while the middleware's turn waits for approval runs the turn without an answer.

The attack: with ``create_agent`` and ``OPAGuardMiddleware`` the model proposes one turn,
``send`` to ``x@ask.test`` (the policy asks a human) beside ``pay`` of 5 (allowed). The
middleware pauses in ``after_model`` before anything of the turn runs. The application then
writes the user's next message as ``graph.invoke(Command(update={"messages":
[HumanMessage("never mind")]}))`` (LangGraph Studio's "edit state and continue", or
``update_state(config, ..., as_node="model")`` then ``invoke(None)``) instead of a resume or
a plain new input. That input is not a new run, so ``before_agent`` (the repair) never runs;
LangGraph runs the pending ``after_model`` again, which now finds the human message last,
drops the decided turn, and ``create_agent`` routes the turn's calls to the tools anyway:
each is decided there on its own (approvals as denials), so ``pay`` runs, after the user
said "never mind", and both answers are written after the human message.

Observed on this branch (sync and async): the ledger holds ``pay`` (``p1``), the question
was never answered, and the conversation reads ``[human, ai(s1, p1), human("never mind"),
tool(s1), tool(p1), ai]``: the model message's calls are not followed by their answers, which
OpenAI-style APIs reject on the next model request (and ``open_call_ids``/the repair treat
the turn as answered, so nothing ever fixes it). The guard node in the same situation keeps
the question open and runs nothing (control).

Expected: as the README says for a question left open, nothing of the waiting turn runs
without an answer (the question stays, as with the guard node, or the turn is repaired as
for a new message), and every answer of the turn sits right after its model message.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import POLICY, USER, Ledger, Script, agent_graph, node_graph
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call as call

ASK = {"to": "x@ask.test", "body": "the report"}


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def script() -> Script:
    turn = AIMessage(
        "", tool_calls=[call("send", ASK, "s1"), call("pay", {"amount": 5}, "p1")], id="a1"
    )
    return Script([turn, "fine"])


def answers_follow_their_turn(messages: list[BaseMessage]) -> bool:
    """Every answer of ``a1``'s calls comes right after ``a1`` (before any other message)."""
    (index,) = [i for i, m in enumerate(messages) if isinstance(m, AIMessage) and m.id == "a1"]
    answers = [m for m in messages if isinstance(m, ToolMessage)]
    following = messages[index + 1 : index + 1 + len(answers)]
    return all(isinstance(m, ToolMessage) for m in following)


def write_new_message(graph: Any, config: dict[str, Any], how: str, node: str) -> None:
    text = HumanMessage("never mind, do something else")
    if how == "command":
        graph.invoke(Command(update={"messages": [text]}), config, context={"user": USER})
    elif how == "acommand":
        asyncio.run(
            graph.ainvoke(Command(update={"messages": [text]}), config, context={"user": USER})
        )
    else:
        graph.update_state(config, {"messages": [text]}, as_node=node)
        graph.invoke(None, config, context={"user": USER})


@pytest.mark.parametrize("how", ["command", "acommand", "update_state"])
def test_a_turn_waiting_for_approval_does_not_run_after_an_update_input(
    engine: EmbeddedPolicy, how: str
) -> None:
    ledger = Ledger()
    graph = agent_graph(engine, script(), ledger, checkpointer=InMemorySaver())
    config: dict[str, Any] = {"configurable": {"thread_id": f"rt39-update-{how}"}}
    out = graph.invoke({"messages": [("user", "pay and mail")]}, config, context={"user": USER})
    assert out.get("__interrupt__"), "the mail to x@ask.test asks for approval"
    assert ledger.runs == []
    write_new_message(graph, config, how, "model")
    messages = graph.get_state(config).values["messages"]
    assert ledger.runs == [], (
        "the waiting turn ran without its question answered, after the user moved on: "
        f"{ledger.runs}"
    )
    assert answers_follow_their_turn(messages), [
        f"{type(m).__name__}:{getattr(m, 'tool_call_id', '')}" for m in messages
    ]


@pytest.mark.parametrize("how", ["command", "update_state"])
def test_control_the_guard_node_keeps_the_question(engine: EmbeddedPolicy, how: str) -> None:
    ledger = Ledger()
    graph = node_graph(engine, script(), ledger, checkpointer=InMemorySaver(), answer_open=True)
    config: dict[str, Any] = {"configurable": {"thread_id": f"rt39-update-node-{how}"}}
    out = graph.invoke({"messages": [("user", "pay and mail")]}, config, context={"user": USER})
    assert out.get("__interrupt__")
    write_new_message(graph, config, how, "agent")
    assert ledger.runs == []
    # The next plain input repairs the turn: answered right after it, and nothing runs.
    graph.invoke({"messages": [("user", "and now?")]}, config, context={"user": USER})
    messages = graph.get_state(config).values["messages"]
    assert ledger.runs == []
    assert answers_follow_their_turn(messages)


@pytest.mark.parametrize("written", ["note", "calls"])
def test_a_model_message_written_into_the_paused_turn_runs_nothing_of_it(
    engine: EmbeddedPolicy, written: str
) -> None:
    """The message written into the run paused after the model is itself a model message
    (``after_model`` then finds no human message after the turn and takes no repair): a
    plain note, or one proposing a call of its own. Nothing of the waiting turn runs; a
    proposed call is decided as any turn (the policy allows ``pay`` of 1), and the next
    plain input leaves every call answered once, the waiting turn's right after it. (With a
    written call, the model is called once with the waiting turn still open, before that
    next input repairs it: the guard logs a WARNING.)"""
    ledger = Ledger()
    graph = agent_graph(engine, script(), ledger, checkpointer=InMemorySaver())
    config: dict[str, Any] = {"configurable": {"thread_id": f"rt39-ai-update-{written}"}}
    out = graph.invoke({"messages": [("user", "pay and mail")]}, config, context={"user": USER})
    assert out.get("__interrupt__")
    if written == "note":
        message = AIMessage("a note", id="w1")
    else:
        message = AIMessage("", tool_calls=[call("pay", {"amount": 1}, "w1p")], id="w1")
    graph.invoke(Command(update={"messages": [message]}), config, context={"user": USER})
    assert [i for _, i, _ in ledger.runs if i in ("s1", "p1")] == []
    out = graph.invoke({"messages": [("user", "and now?")]}, config, context={"user": USER})
    assert [i for _, i, _ in ledger.runs if i in ("s1", "p1")] == []
    messages = out["messages"]
    counts: dict[str, int] = {}
    for m in messages:
        if isinstance(m, ToolMessage):
            counts[m.tool_call_id] = counts.get(m.tool_call_id, 0) + 1
    assert all(n == 1 for n in counts.values()), counts
    (index,) = [i for i, m in enumerate(messages) if isinstance(m, AIMessage) and m.id == "a1"]
    following = messages[index + 1 : index + 3]
    assert sorted(getattr(m, "tool_call_id", "") for m in following) == ["p1", "s1"], [
        f"{type(m).__name__}:{getattr(m, 'tool_call_id', '')}" for m in messages
    ]
