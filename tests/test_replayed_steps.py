"""A step that runs again answers every call of it exactly once, and runs a call twice only
when the turn was decided twice.

README: "Every tool call gets exactly one answer". LangGraph runs a step again when a thread
is replayed from an earlier checkpoint (time travel: "re-run from here" in Studio,
`graph.invoke(None, past_state.config)`), when an answered question is answered again, and
when a task is retried. The ToolCallGuard interceptor's claim for a duplicated id (one answer
per id) used to outlive the run that took it: a replay found it taken, both calls under the
id returned nothing, and the next model call failed on the unanswered id. The claim now
belongs to the task that took it, and that task answers again whenever it runs again.
Its allowed calls run once per task and attempt, as the guard node's run once per decision.

The guard node and the middleware run a call once per decided turn: a replay from a
checkpoint before the decision (LangGraph saves it as a fork of the thread) decides the turn
again and runs what is allowed again, as LangGraph re-runs every node after the checkpoint;
a replay from a checkpoint after the decision, or a second answer to an answered question,
answers each call without running it again in this process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode
from langgraph.types import Command
from mediation_kit import (
    POLICY,
    USER,
    WIRING,
    Ledger,
    Script,
    agent_graph,
    answers_per_turn,
    interceptor_react_agent,
    node_graph,
)

from langchain_opa_guard import EmbeddedPolicy, ToolCallGuard
from langchain_opa_guard.testing import tool_call


def _run(graph: Any, value: Any, config: Any, use_async: bool) -> Any:
    if use_async:
        return asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
    return graph.invoke(value, config, context={"user": USER})


def _forked(graph: Any, config: Any) -> bool:
    """Whether this LangGraph saved the replay as a fork of the thread (newer versions do;
    older ones run the replayed tasks again under the same checkpoint)."""
    return any(s.metadata.get("source") == "fork" for s in graph.get_state_history(config))


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("replay", [False, True], ids=["control", "replayed step"])
def test_a_replayed_step_answers_a_duplicated_id_once(replay: bool, use_async: bool) -> None:
    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    ledger = Ledger()
    graph = interceptor_react_agent(
        engine,
        ledger,
        [
            tool_call("read", {"item": "a"}, "dup"),
            tool_call("read", {"item": "b"}, "dup"),
            tool_call("read", {"item": "c"}, "r1"),
        ],
        checkpointer=InMemorySaver(),
        interrupt_before=["tools"],
    )
    config: dict[str, Any] = {"configurable": {"thread_id": f"replay-{replay}-{use_async}"}}
    _run(graph, {"messages": [("user", "go")]}, config, use_async)
    paused = graph.get_state(config)
    _run(graph, None, config, use_async)
    if replay:
        try:
            _run(graph, None, paused.config, use_async)
        except ValueError as exc:  # the agent node refuses a history with an unanswered call
            print(f"the replay failed: {exc}")
    messages = graph.get_state(config).values["messages"]
    turns = answers_per_turn(messages)
    assert turns[0] == {"dup": 1, "r1": 1}, f"answers by id after the replay: {turns}"
    # The duplicated id never runs; the other call runs again only where the replay is a
    # new step (a fork): a replay of the same step answers it without running it again.
    again = replay and _forked(graph, config)
    assert [args["item"] for _, _, args in ledger.runs] == (["c", "c"] if again else ["c"])


def test_without_a_checkpointer_each_call_in_its_own_task_answers_a_duplicated_id_once() -> None:
    """Stopped: create_react_agent sends each call to the ToolNode in a task of its own;
    without a checkpointer there is no thread, so the claim would be scoped to the task
    (two claims, two answers). The first call is found by identity instead."""
    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    ledger = Ledger()
    graph = interceptor_react_agent(
        engine,
        ledger,
        [tool_call("read", {"item": "a"}, "dup"), tool_call("read", {"item": "b"}, "dup")],
    )
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": USER})
    assert ledger.runs == []
    assert answers_per_turn(result["messages"]) == [{"dup": 1}]


# With the guard as the agent's edge (mediation_kit.WIRING), the agent's step decides.
DECIDING_NODE = {
    "node": "guard" if WIRING == "node" else "agent",
    "middleware": "OPAGuardMiddleware.after_model",
}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", ["node", "middleware"])
@pytest.mark.parametrize("where", ["before the decision", "after the decision"])
def test_a_replay_runs_a_call_again_only_when_it_decides_it_again(
    kind: str, where: str, use_async: bool
) -> None:
    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    ledger = Ledger()
    script = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("read", {"item": "a"}, "r1"),
                    tool_call("read", {"item": "b"}, "r2"),
                ],
            ),
            "ok",
        ]
    )
    maker = node_graph if kind == "node" else agent_graph
    graph = maker(engine, script, ledger, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": f"replay-{kind}-{where}-{use_async}"}}
    _run(graph, {"messages": [("user", "go")]}, config, use_async)
    assert len(ledger.runs) == 2
    node = DECIDING_NODE[kind] if where == "before the decision" else "tools"
    # The oldest checkpoint about to run `node`: the one of the turn with the calls.
    past = next(s for s in reversed(list(graph.get_state_history(config))) if node in s.next)

    _run(graph, None, past.config, use_async)

    messages = graph.get_state(config).values["messages"]
    assert answers_per_turn(messages) == [{"r1": 1, "r2": 1}]
    again = len(ledger.runs) - 2
    decided_again = where == "before the decision" and _forked(graph, config)
    assert again == (2 if decided_again else 0), ledger.runs
    if not decided_again:
        answers = [m for m in messages if isinstance(m, ToolMessage)]
        assert all("did not run again" in str(m.content) for m in answers), answers


APPROVE = {"decisions": [{"type": "approve"}]}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", ["node", "middleware"])
@pytest.mark.parametrize("how", ["replayed question", "question answered again"])
def test_an_answered_question_runs_its_call_again_only_when_asked_again(
    kind: str, how: str, use_async: bool
) -> None:
    """Time travel to the waiting question asks it again (LangGraph forks the thread): the
    new answer is a new decision and runs the call again. Sending a second answer to the
    question already answered (addressed at its checkpoint) is the same decision: the call
    gets one answer and does not run again."""
    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    ledger = Ledger()
    script = Script(
        [AIMessage("", tool_calls=[tool_call("send", {"to": "a@ask.test", "body": "hi"}, "s1")])]
    )
    maker = node_graph if kind == "node" else agent_graph
    graph = maker(engine, script, ledger, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": f"asked-{kind}-{how}-{use_async}"}}
    first = _run(graph, {"messages": [("user", "send it")]}, config, use_async)
    assert "__interrupt__" in first
    waiting = graph.get_state(config)
    _run(graph, Command(resume=APPROVE), config, use_async)
    assert len(ledger.runs) == 1

    if how == "replayed question":
        out = _run(graph, None, waiting.config, use_async)
        asked_again = "__interrupt__" in out
        if asked_again:
            _run(graph, Command(resume=APPROVE), config, use_async)
        assert asked_again == _forked(graph, config)
    else:
        asked_again = False
        _run(graph, Command(resume=APPROVE), waiting.config, use_async)

    messages = graph.get_state(config).values["messages"]
    assert answers_per_turn(messages) == [{"s1": 1}]
    assert len(ledger.runs) == (2 if asked_again else 1), ledger.runs


def test_a_tool_node_resumed_after_a_tools_own_interrupt_runs_its_other_calls_once() -> None:
    """A ToolNode of one's own runs a turn's calls in one task; a tool that pauses with
    ``interrupt()`` makes LangGraph run the whole task again on resume. The interceptor runs
    each allowed call once per task: the call that already ran is answered without running
    again (its side effect is not repeated), the paused one finishes."""
    from langchain_core.tools import StructuredTool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import tools_condition
    from langgraph.types import interrupt

    runs: list[str] = []

    def read(item: str) -> str:
        """Read an item."""
        runs.append(item)
        if item == "ask":
            return f"answer: {interrupt('may I?')}"
        return f"read {item}"

    tools = [StructuredTool.from_function(read)]
    guard = ToolCallGuard(EmbeddedPolicy(TEST_POLICIES, policy=POLICY), registry=tools)
    node = ToolNode(tools, wrap_tool_call=guard.wrap_tool_call)
    turns = iter(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("read", {"item": "a"}, "r1"),
                    tool_call("read", {"item": "ask"}, "r2"),
                ],
            )
        ]
    )
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda s: {"messages": [next(turns, AIMessage("done"))]})
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "tool-interrupt"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    out = graph.invoke(Command(resume="yes"), config, context={"user": USER})
    # The ToolNode runs the two calls on threads, in either order: "a" runs once in all.
    assert sorted(runs) == ["a", "ask", "ask"], runs
    assert answers_per_turn(out["messages"]) == [{"r1": 1, "r2": 1}]
    answers = {
        m.tool_call_id: str(m.content) for m in out["messages"] if isinstance(m, ToolMessage)
    }
    assert answers["r2"] == "answer: yes", answers
    # Ran before the pause: answered without running again; if the pause came first, it
    # ran on the resume. Either way it ran once (above) and has one answer.
    assert "did not run again" in answers["r1"] or answers["r1"] == "read a", answers
