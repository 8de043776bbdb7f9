"""Red team 6: a retried shared tools task runs a finished call again when the model's
message has no id.

Without a checkpointer, the guard node sends a turn's allowed calls to the tools node in
one task (``task_groups``); a retry of that task (the node's ``RetryPolicy``) must run no
call twice, and relies on ``claims.run_once`` for it: a call that ran is claimed under
``(thread, decided turn, call id)`` and answers a retry with its kept first result. But the
decided turn is ``decided_turn(message_id, config)``, which is ``None`` when the model's
message has no id, and then ``claim_key`` is ``None``: nothing is claimed, nothing is kept,
and every call of the task runs again on the retry.

A model message without an id is ordinary: LangGraph assigns ids only through the
``add_messages`` reducer, and a graph state declared as
``messages: Annotated[list[AnyMessage], operator.add]`` (common in LangGraph examples) keeps
a provider's message as it came; several chat model integrations leave ``id`` unset.

The attack: one turn with a mail (allowed, runs first) and a read whose backend fails
once; the tools node retries. Observed on main: the mail is sent twice (sync and async,
both engines). With a checkpointer (one task per call) the retry runs only the read, and
with ids (``MessagesState``) tests/test_task_groups.py shows the mail runs once.

What should happen: the mail runs once; its answer on the retry is its first result (or, at
the least, the guard's "already ran" answer).
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import RetryPolicy
from mediation_kit import POLICY, USER

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAServer,
    PolicyEngine,
    PolicyGuardNode,
)
from langchain_opa_guard.testing import tool_call


class State(TypedDict):
    messages: Annotated[list[AnyMessage], operator.add]


@pytest.fixture(params=["embedded", "opa"])
def engine(request: pytest.FixtureRequest) -> Any:
    if request.param == "embedded":
        yield EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
        return
    client = OPAServer(request.getfixturevalue("opa_url"), policy=POLICY)
    yield client
    client.close()


def build(engine: PolicyEngine, sent: list[str], reads: list[str], checkpointer: Any) -> Any:
    def send(to: str, body: str) -> str:
        """Send a mail."""
        sent.append(to)
        return f"sent to {to}"

    def read(item: str) -> str:
        """Read an item (its backend fails the first time)."""
        reads.append(item)
        if len(reads) == 1:
            raise ConnectionError("the backend hiccuped")
        return f"item {item}"

    turn = AIMessage(
        "",
        tool_calls=[
            tool_call("send", {"to": "bob@ok.test", "body": "x"}, "s1"),
            tool_call("read", {"item": "a"}, "r1"),
        ],
    )
    assert turn.id is None
    steps = iter([turn])
    node = GuardedToolNode([StructuredTool.from_function(send), StructuredTool.from_function(read)])
    builder = StateGraph(State)
    builder.add_node(
        "agent", RunnableLambda(lambda s: {"messages": [next(steps, AIMessage("ok"))]})
    )
    builder.add_node("guard", PolicyGuardNode(engine, registry=node))
    builder.add_node("tools", node, retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.01))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


def run(graph: Any, thread: str, asynchronous: bool) -> list[Any]:
    state = {"messages": [("user", "mail bob and read a")]}
    config = {"configurable": {"thread_id": thread}, "max_concurrency": 1}
    if asynchronous:
        out = asyncio.run(graph.ainvoke(state, config, context={"user": USER}))
    else:
        out = graph.invoke(state, config, context={"user": USER})
    return list(out["messages"])


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_retry_of_the_shared_task_does_not_send_the_mail_again(
    engine: PolicyEngine, asynchronous: bool
) -> None:
    sent: list[str] = []
    reads: list[str] = []
    messages = run(build(engine, sent, reads, None), f"no-id-{asynchronous}", asynchronous)
    assert reads == ["a", "a"]  # the failed read ran again, once
    assert sent == ["bob@ok.test"], f"the mail was sent {len(sent)} times"
    answers = [m for m in messages if isinstance(m, ToolMessage)]
    assert sorted(m.tool_call_id for m in answers) == ["r1", "s1"]


def test_control_with_a_checkpointer_the_retry_runs_only_the_failed_call(
    engine: PolicyEngine,
) -> None:
    sent: list[str] = []
    reads: list[str] = []
    run(build(engine, sent, reads, InMemorySaver()), "no-id-checkpointed", False)
    assert reads == ["a", "a"]
    assert sent == ["bob@ok.test"]
