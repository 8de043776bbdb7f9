"""Red team 37: an approval addressed to the question's checkpoint runs a call the repair
answered "did not run", and the user's new message drops out of the thread.

The attack: a policy asks for approval of ``send`` (``s1``); the question is left open
and the user writes "never mind, do not send it". The repair answers ``s1`` "did not run"
and the model says "ok". The reviewer's approval then arrives addressed to the checkpoint
the question was read from (``get_state(config).config``, with its ``checkpoint_id``, as
review UIs keep it; LangGraph notes that Studio sends ``checkpoint_id`` with
``Command(resume=...)``).

Observed on this branch (node wiring with ``answer_open_calls``, and ``create_agent`` with
the middleware): ``send`` runs, and the thread's head becomes that branch: the "never
mind" message, the repair's answer and the model's reply are gone from the conversation.
The README says "A question left open (a new message sent instead of an answer) approves
nothing, and neither does an answer sent after that message"; it also says "A fork from a
checkpoint before the new message runs the turn as it would have run", which is what
LangGraph does with a resume addressed to an older checkpoint. The two sentences disagree
for this case, and the call the model was told did not run now has.

Expected: an answer to a question a new message superseded approves nothing, also when it
names the question's checkpoint (the run is refused, or ``s1`` is answered unrun again).
The control: an answer without a checkpoint id approves nothing (as ``test_open_calls``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import InvalidUpdateError, UnknownInterruptError
from langgraph.types import Command
from mediation_kit import POLICY, USER, Ledger, Script, agent_graph, node_graph
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
def test_an_addressed_approval_after_the_new_message_approves_nothing(
    engine: EmbeddedPolicy, kind: str
) -> None:
    ledger = Ledger()
    graph = build(kind, engine, ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"rt37-addressed-{kind}"}}
    question, asked_at = left_open_then_never_mind(graph, config)
    # Refusing the stale answer outright is fine too.
    with contextlib.suppress(RuntimeError, ValueError, InvalidUpdateError, UnknownInterruptError):
        graph.invoke(Command(resume={question.id: APPROVE}), asked_at, context={"user": USER})
    assert ledger.runs == [], "the send the repair answered 'did not run' ran"
    head = graph.get_state(config).values["messages"]
    assert NEVER_MIND in [m.content for m in head], "the user's new message left the thread"


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
