"""Red team 3: the ToolCallGuard interceptor's claim for a duplicated id outlives the run
that took it, so replaying the step leaves the id with no answer at all.

README: "Every tool call gets exactly one answer". When the ToolNode's calls come back from
a checkpoint (each call in a task of its own, after `interrupt_before=["tools"]`), the
first of two calls under one id is found by a process-wide claim keyed by (thread, model
message, id, attempt). Time travel (LangGraph's replay of a checkpoint: "re-run from
here" in Studio, `graph.invoke(None, state.config)`) runs the same step again in the same
thread: both calls find the claim taken and return an empty Command, the id gets no answer,
and the next model call fails (create_react_agent refuses the history; OpenAI-style APIs
reject it).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode
from mediation_kit import POLICY, USER, Ledger, Script, answers_per_turn, mediation_tools

from langchain_opa_guard import EmbeddedPolicy, ToolCallGuard
from langchain_opa_guard.testing import ScriptedChatModel, tool_call


@pytest.mark.parametrize("replay", [False, True], ids=["control", "replayed step"])
def test_a_replayed_step_answers_a_duplicated_id_once(replay: bool) -> None:
    from langgraph.prebuilt import create_react_agent

    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    ledger = Ledger()
    tools = mediation_tools(ledger)
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    script = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("read", {"item": "a"}, "dup"),
                    tool_call("read", {"item": "b"}, "dup"),
                    tool_call("read", {"item": "c"}, "r1"),
                ],
            ),
            "ok",
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = create_react_agent(
            ScriptedChatModel(script=[script.reply] * 8),
            node,
            checkpointer=InMemorySaver(),
            interrupt_before=["tools"],
        )
    config: dict[str, Any] = {"configurable": {"thread_id": f"replay-{replay}"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    paused = graph.get_state(config)
    graph.invoke(None, config, context={"user": USER})
    if replay:
        try:
            graph.invoke(None, paused.config, context={"user": USER})
        except ValueError as exc:  # the agent node refuses a history with an unanswered call
            print(f"the replay failed: {exc}")
    messages = graph.get_state(config).values["messages"]
    turns = answers_per_turn(messages)
    assert turns[0] == {"dup": 1, "r1": 1}, f"answers by id after the replay: {turns}"


def test_without_a_checkpointer_each_call_in_its_own_task_answers_a_duplicated_id_once() -> None:
    """Stopped: create_react_agent sends each call to the ToolNode in a task of its own;
    without a checkpointer there is no thread, so the claim would be scoped to the task
    (two claims, two answers). The first call is found by identity instead."""
    from langgraph.prebuilt import create_react_agent

    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    ledger = Ledger()
    tools = mediation_tools(ledger)
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    script = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("read", {"item": "a"}, "dup"),
                    tool_call("read", {"item": "b"}, "dup"),
                ],
            ),
            "ok",
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = create_react_agent(ScriptedChatModel(script=[script.reply] * 4), node)
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": USER})
    assert ledger.runs == []
    assert answers_per_turn(result["messages"]) == [{"dup": 1}]
