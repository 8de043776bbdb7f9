"""Red team 39: a ``create_agent`` used as a node of a parent graph repairs an open call in
its own state, and the parent's ``messages`` gets the repair's answer after the new message.

The attack: the parent graph is ``START -> assistant -> END`` over ``MessagesState``, where
``assistant`` is ``create_agent`` with ``OPAGuardMiddleware`` first. The parent is given a
history whose model turn ``a1`` (``pay``) is still open, followed by the user's "cancel
that". The middleware's ``before_agent`` repairs it inside the child
(``RemoveMessage(REMOVE_ALL)`` then the list with the answer right after ``a1``), but a
subgraph hands its final ``messages`` to the parent, whose ``add_messages`` keeps the
parent's order for ids it has and appends new ones: the repair's answer landed after
"cancel that" in the parent, a history OpenAI-style APIs reject.

A subgraph's rewrite of its own channel cannot reach the parent's, so the README says to
put ``answer_open_calls`` in the parent, before the node that holds the agent (the parent's
channel is then repaired in place, and the agent finds nothing open). This test runs that
wiring; the control runs the agent on its own, whose middleware repairs in place.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from mediation_kit import POLICY, USER, Ledger, Script, agent_graph
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy, answer_open_calls
from langchain_opa_guard.testing import tool_call


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def shape(messages: list[BaseMessage]) -> list[str]:
    return [
        f"{type(m).__name__}:{m.id if not isinstance(m, ToolMessage) else m.tool_call_id}"
        for m in messages
    ]


def cut_off_turn() -> list[BaseMessage]:
    """A turn whose call ``p1`` was never answered, then the user's next message."""
    return [
        HumanMessage("pay 5", id="h1"),
        AIMessage("", tool_calls=[tool_call("pay", {"amount": 5}, "p1")], id="a1"),
        HumanMessage("cancel that", id="h2"),
    ]


def answer_follows(messages: list[BaseMessage], message_id: str, call_id: str) -> bool:
    (index,) = [i for i, m in enumerate(messages) if m.id == message_id]
    following = messages[index + 1]
    return isinstance(following, ToolMessage) and following.tool_call_id == call_id


def test_a_parent_that_repairs_before_its_agent_keeps_the_answer_after_the_turn(
    engine: EmbeddedPolicy,
) -> None:
    ledger = Ledger()
    # The child's model: the two earlier model messages count as its turns; it then answers.
    child = agent_graph(engine, Script(["-", "-", "fine"]), ledger)
    builder = StateGraph(MessagesState)
    builder.add_node(answer_open_calls)
    builder.add_node("assistant", child)
    builder.add_edge(START, "answer_open_calls")
    builder.add_edge("answer_open_calls", "assistant")
    builder.add_edge("assistant", END)
    parent = builder.compile(checkpointer=InMemorySaver())
    config: dict[str, Any] = {"configurable": {"thread_id": "rt39-subgraph-repair"}}
    parent.invoke({"messages": cut_off_turn()}, config, context={"user": USER})
    messages = parent.get_state(config).values["messages"]
    assert ledger.runs == []
    assert answer_follows(messages, "a1", "p1"), shape(messages)


def test_control_the_child_alone_places_the_answer_right_after_the_turn(
    engine: EmbeddedPolicy,
) -> None:
    ledger = Ledger()
    child = agent_graph(engine, Script(["-", "-", "fine"]), ledger, checkpointer=InMemorySaver())
    config: dict[str, Any] = {"configurable": {"thread_id": "rt39-child-repair"}}
    child.invoke({"messages": cut_off_turn()}, config, context={"user": USER})
    messages = child.get_state(config).values["messages"]
    assert ledger.runs == []
    assert answer_follows(messages, "a1", "p1"), shape(messages)
