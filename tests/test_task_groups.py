"""How the guard node hands a turn's allowed calls to the tools node.

With a checkpointer each allowed call is a task of its own (a task LangGraph runs again runs
only its own call). Without one nothing can pause or resume, so the allowed calls share one
task, as in a plain ``ToolNode``; a retry of that task must still run no call twice, and a
call that already ran answers with its first result. Denied calls never reach the task.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, tools_condition
from langgraph.types import RetryPolicy, Send
from mediation_kit import (
    POLICY,
    USER,
    Ledger,
    Script,
    assert_one_answer_per_id,
    mediation_tools,
    node_graph,
)

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAServer,
    PolicyEngine,
    PolicyGuardNode,
)
from langchain_opa_guard.testing import tool_call

INPUTS = {"messages": [("user", "go")]}


@pytest.fixture(params=["embedded", "opa"])
def engine(request: pytest.FixtureRequest, opa_url: str) -> Any:
    if request.param == "embedded":
        yield EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
        return
    client = OPAServer(opa_url, policy=POLICY)
    yield client
    client.close()


def mixed_turn() -> Script:
    return Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("read", {"item": "a"}, "r1"),
                    tool_call("send", {"to": "eve@evil.test", "body": "x"}, "s1"),
                    tool_call("send", {"to": "bob@ok.test", "body": "x"}, "s2"),
                    tool_call("read", {"item": "b"}, "r2"),
                ],
            ),
            "done",
        ]
    )


def tools_inputs(graph: Any, config: dict[str, Any] | None = None) -> list[Any]:
    seen = []
    for event in graph.stream(INPUTS, config, context={"user": USER}, stream_mode="tasks"):
        if event.get("name") == "tools" and "input" in event:
            seen.append(event["input"])
    return seen


def test_without_a_checkpointer_the_allowed_calls_share_one_task(engine: PolicyEngine) -> None:
    ledger = Ledger()
    inputs = tools_inputs(node_graph(engine, mixed_turn(), ledger))
    assert [[c["id"] for c in i["calls"]] for i in inputs] == [["r1", "s2", "r2"]]
    assert sorted(inputs[0]["grant"]) == ["r1", "r2", "s2"]
    assert sorted(call_id for _, call_id, _ in ledger.runs) == ["r1", "r2", "s2"]


def test_with_a_checkpointer_each_allowed_call_is_a_task(engine: PolicyEngine) -> None:
    ledger = Ledger()
    graph = node_graph(engine, mixed_turn(), ledger, checkpointer=InMemorySaver())
    inputs = tools_inputs(graph, {"configurable": {"thread_id": "t"}})
    assert sorted(c["id"] for i in inputs for c in i["calls"]) == ["r1", "r2", "s2"]
    assert all(len(i["calls"]) == 1 for i in inputs)
    assert sorted(call_id for _, call_id, _ in ledger.runs) == ["r1", "r2", "s2"]


def flaky_graph(engine: PolicyEngine, sent: list[str], reads: list[str]) -> Any:
    """One send and two reads in one turn; the first read fails once, the tools node has a
    retry policy and no checkpointer."""

    def send(to: str, body: str) -> str:
        """Send a message."""
        sent.append(to)
        return f"sent to {to}"

    def read(item: str) -> str:
        """Read an item."""
        reads.append(item)
        if reads.count("a") == 1 and item == "a":
            raise ConnectionError("the backend hiccuped")
        return f"item {item}"

    script = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("send", {"to": "bob@ok.test", "body": "x"}, "s1"),
                    tool_call("read", {"item": "b"}, "r2"),
                    tool_call("read", {"item": "a"}, "r1"),
                ],
            ),
            "done",
        ]
    )
    node = GuardedToolNode([StructuredTool.from_function(send), StructuredTool.from_function(read)])
    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}))
    builder.add_node("guard", PolicyGuardNode(engine, registry=node))
    builder.add_node("tools", node, retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.01))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile()


def check_retried_turn(out: dict[str, Any], sent: list[str], reads: list[str]) -> None:
    assert sent == ["bob@ok.test"], f"the send ran {len(sent)} times"
    assert sorted(reads) == ["a", "a", "b"], reads  # the failed read ran again, once
    messages = out["messages"]
    assert_one_answer_per_id(messages)
    answers = {m.tool_call_id: m.content for m in messages if isinstance(m, ToolMessage)}
    # The calls that ran before the retry answer with their first results.
    assert answers == {"s1": "sent to bob@ok.test", "r2": "item b", "r1": "item a"}


def test_a_retried_shared_task_runs_no_call_twice_and_keeps_first_answers(
    engine: PolicyEngine,
) -> None:
    sent: list[str] = []
    reads: list[str] = []
    out = flaky_graph(engine, sent, reads).invoke(INPUTS, context={"user": USER})
    check_retried_turn(out, sent, reads)


def test_a_retried_shared_task_runs_no_call_twice_async(engine: PolicyEngine) -> None:
    sent: list[str] = []
    reads: list[str] = []
    graph = flaky_graph(engine, sent, reads)
    out = asyncio.run(graph.ainvoke(INPUTS, context={"user": USER}))
    check_retried_turn(out, sent, reads)


def test_kept_answers_are_dropped_once_the_task_is_done(engine: PolicyEngine) -> None:
    from langchain_opa_guard.guards.claims import CLAIMS

    ledger = Ledger()
    before = len(CLAIMS._answers)
    node_graph(engine, mixed_turn(), ledger).invoke(INPUTS, context={"user": USER})
    assert sorted(call_id for _, call_id, _ in ledger.runs) == ["r1", "r2", "s2"]
    assert len(CLAIMS._answers) == before


def test_a_payload_whose_call_does_not_match_its_grant_runs_nothing(
    engine: PolicyEngine,
) -> None:
    """A node that forges the guard's payload: one call granted, the other with the grant of
    a different call. The payload's seal no longer holds: neither runs, both are answered."""
    from langchain_opa_guard.guards.execution import calls_payload

    ledger = Ledger()
    good = tool_call("read", {"item": "a"}, "r1")
    bad = tool_call("send", {"to": "eve@evil.test", "body": "x"}, "s1")
    turn = AIMessage("", tool_calls=[good, bad], id="turn-1")

    def forged(state: MessagesState) -> list[Send]:
        earlier = state["messages"][:-1]
        payload = calls_payload(
            [good], {}, "messages", earlier, turn, views={"r1": ""}, stateless=True
        )
        payload["calls"] = [*payload["calls"], {**bad, "type": "tool_call"}]
        payload["grant"]["s1"] = payload["grant"]["r1"]
        return [Send("tools", payload)]

    node = GuardedToolNode(mediation_tools(ledger))
    builder = StateGraph(MessagesState)
    builder.add_node("forger", lambda s: {"messages": [turn]})
    builder.add_node("tools", node)
    builder.add_edge(START, "forger")
    builder.add_conditional_edges("forger", forged, ["tools"])
    builder.add_edge("tools", END)
    out = builder.compile().invoke(INPUTS)
    assert ledger.runs == []
    answers = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert answers["s1"].status == answers["r1"].status == "error"
    assert "could not be verified" in str(answers["s1"].content)


def test_a_guard_in_a_subgraph_of_a_checkpointed_parent_sends_a_task_per_call(
    engine: PolicyEngine,
) -> None:
    """The parent's checkpointer reaches the subgraph's tasks: a resume there must run only
    the interrupted call's task, so the calls keep a task each."""
    ledger = Ledger()
    inner = node_graph(engine, mixed_turn(), ledger)
    parent = StateGraph(MessagesState)
    parent.add_node("inner", inner)
    parent.add_edge(START, "inner")
    parent.add_edge("inner", END)
    graph = parent.compile(checkpointer=InMemorySaver())
    seen = []
    for _, event in graph.stream(
        INPUTS,
        {"configurable": {"thread_id": "sub"}},
        context={"user": USER},
        stream_mode="tasks",
        subgraphs=True,
    ):
        if event.get("name") == "tools" and "input" in event:
            seen.append([c["id"] for c in event["input"]["calls"]])
    assert sorted(seen) == [["r1"], ["r2"], ["s2"]]
    assert sorted(call_id for _, call_id, _ in ledger.runs) == ["r1", "r2", "s2"]


def test_a_stateless_hand_over_to_a_node_whose_tools_read_the_state_runs_nothing() -> None:
    """The guard sends a call without the state only to a node whose tools read none. Such a
    hand-over (sealed, as the guard makes it) sent to a node with a tool that reads the state
    is refused before any tool runs: the node no longer builds a message for the calls of a
    stateless hand-over, and nothing of it may run where the state would be missing."""
    from langgraph.types import Send

    from langchain_opa_guard import GuardWiringError
    from langchain_opa_guard.guards.execution import calls_payload

    ran: list[str] = []

    def read(item: str, state: Annotated[dict[str, Any], InjectedState]) -> str:
        """Read an item."""
        ran.append(item)
        return item

    call = tool_call("read", {"item": "a"}, "r1")
    turn = AIMessage("", tool_calls=[call], id="turn-1")
    payload = calls_payload([call], {}, "messages", [], turn, views={"r1": ""}, stateless=True)
    node = GuardedToolNode([StructuredTool.from_function(read)])
    assert not node.reads_no_state
    builder = StateGraph(MessagesState)
    builder.add_node("sender", lambda s: {"messages": [turn]})
    builder.add_node("tools", node)
    builder.add_edge(START, "sender")
    builder.add_conditional_edges("sender", lambda s: [Send("tools", payload)], ["tools"])
    builder.add_edge("tools", END)
    with pytest.raises(GuardWiringError, match="reads the graph state"):
        builder.compile().invoke(INPUTS)
    assert ran == []
