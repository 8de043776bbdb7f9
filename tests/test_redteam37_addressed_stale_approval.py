"""Red team 37: an approval addressed to the question's checkpoint, after the user wrote a
new message instead of answering it.

A policy asks for approval of ``send`` (``s1``); the question is left open and the user
writes "never mind, do not send it"; the repair answers ``s1`` as not run and the model says
"ok". The reviewer's approval then arrives addressed to the checkpoint the question was read
from (``get_state(config).config``, with its ``checkpoint_id``, as review UIs keep it;
LangGraph Studio sends ``checkpoint_id`` with ``Command(resume=...)``).

That is LangGraph's time travel: the resume forks the thread from the question's
checkpoint, before the new message. There the reviewer approved exactly that call, so it
runs, once, with the approved arguments, and answered once; the fork becomes the thread's
head, and the branch with the new message stays in the thread's history (README, Human
approval). An approval sent to the thread itself (no checkpoint id) after the new message
approves nothing (the control).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
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
from langchain_opa_guard.guards.open_calls import OPEN_CALL_REASON

SEND = {"name": "send", "args": {"to": "a@ask.test", "body": "x"}, "id": "s1", "type": "tool_call"}
APPROVE = {"decisions": [{"type": "approve"}]}
NEVER_MIND = "never mind, do not send it"


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def build(kind: str, engine: EmbeddedPolicy, ledger: Ledger) -> Any:
    script = Script([AIMessage("", tool_calls=[SEND], id="a1"), "ok"])
    if kind == "middleware":
        return agent_graph(engine, script, ledger, checkpointer=InMemorySaver())
    return node_graph(
        engine, script, ledger, checkpointer=InMemorySaver(), wiring="node", answer_open=True
    )


def left_open_then_never_mind(graph: Any, config: dict[str, Any]) -> tuple[Any, Any]:
    first = graph.invoke({"messages": [("user", "send")]}, config, context={"user": USER})
    (question,) = first["__interrupt__"]
    asked_at = graph.get_state(config).config
    second = graph.invoke({"messages": [("user", NEVER_MIND)]}, config, context={"user": USER})
    (repair,) = [m for m in second["messages"] if isinstance(m, ToolMessage)]
    assert repair.response_metadata["opa_guard"]["reasons"] == [OPEN_CALL_REASON]
    return question, asked_at


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_an_addressed_approval_runs_the_call_once_in_a_fork_before_the_new_message(
    engine: EmbeddedPolicy, kind: str
) -> None:
    ledger = Ledger()
    graph = build(kind, engine, ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"rt37-addressed-{kind}"}}
    question, asked_at = left_open_then_never_mind(graph, config)
    graph.invoke(Command(resume={question.id: APPROVE}), asked_at, context={"user": USER})
    assert ledger.runs == [("send", "s1", SEND["args"])]  # approved, once, as approved
    head = graph.get_state(config).values["messages"]
    assert NEVER_MIND not in [m.content for m in head]  # the fork: before the new message
    assert_one_answer_per_id(head)
    assert [m.tool_call_id for m in head if isinstance(m, ToolMessage)] == ["s1"]
    branches = [s.values.get("messages", []) for s in graph.get_state_history(config)]
    assert any(NEVER_MIND in [m.content for m in b] for b in branches)  # still in the thread


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_control_an_unaddressed_approval_after_the_new_message_approves_nothing(
    engine: EmbeddedPolicy, kind: str
) -> None:
    ledger = Ledger()
    graph = build(kind, engine, ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"rt37-unaddressed-{kind}"}}
    question, _ = left_open_then_never_mind(graph, config)
    graph.invoke(Command(resume={question.id: APPROVE}), config, context={"user": USER})
    assert ledger.runs == []
    head = graph.get_state(config).values["messages"]
    assert NEVER_MIND in [m.content for m in head]
