"""Red team 30: OPAGuardMiddleware not first in ``middleware=[...]``.

Nothing refuses the order, and no call runs unchecked; but a middleware listed before the
guard has its ``after_model`` run after the guard's, so when both answer a call the guard
denied, the call gets two answers (the README says to put the guard first, and what happens
otherwise). Expected to fail (strict) until the order is refused, or until the guard answers
in a way that another middleware's answer can still displace.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain.agents.middleware import TodoListMiddleware, ToolCallLimitMiddleware
from langchain_core.messages import AIMessage
from mediation_kit import POLICY, USER, Ledger, Script, agent_graph, answers_per_turn

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine
from langchain_opa_guard.testing import tool_call

# Known and documented (README, "The middleware and the order of middleware"): strict, so
# that the day the order is refused or the answers are merged, these are turned on.
NOT_FIRST = pytest.mark.xfail(
    strict=True, reason="the guard not first: a later after_model answers a denied call again"
)


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


def _run(engine: PolicyEngine, middleware: Any, calls: list[Any]) -> tuple[Ledger, list[Any]]:
    ledger = Ledger()
    script = Script([AIMessage("", tool_calls=calls), "ok"])
    try:
        graph = agent_graph(engine, script, ledger, middleware=[middleware])
    except (ValueError, TypeError):  # the order refused at construction: fixed
        return ledger, []
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": USER})
    return ledger, answers_per_turn(result["messages"])


@NOT_FIRST
def test_todo_list_before_the_guard_answers_each_write_todos_once(engine: PolicyEngine) -> None:
    """Two parallel write_todos calls (the policy denies write_todos: default deny). The
    guard answers both with its denial; TodoListMiddleware's after_model, which runs after
    the guard's here, answers both again with its parallel-call error."""
    ledger, turns = _run(
        engine,
        TodoListMiddleware(),
        [
            tool_call("write_todos", {"todos": []}, "w1"),
            tool_call("write_todos", {"todos": []}, "w2"),
        ],
    )
    assert ledger.runs == []
    assert all(n == 1 for turn in turns for n in turn.values()), turns


# Older LangChain (1.2) ends the run without answering the calls it stops.
LIMIT_ANSWERS = "could run" in inspect.getsource(ToolCallLimitMiddleware)


@pytest.mark.xfail(
    LIMIT_ANSWERS,
    strict=True,
    reason="the guard not first: a later after_model answers a denied call again",
)
def test_tool_call_limit_end_before_the_guard_answers_each_call_once(
    engine: PolicyEngine,
) -> None:
    """pay 5000 (denied) and read (allowed), run_limit=1, exit_behavior="end": the guard
    answers p1 with its denial, then ToolCallLimitMiddleware answers p1 again ("stopped
    before this tool call could run") and jumps to the end."""
    ledger, turns = _run(
        engine,
        ToolCallLimitMiddleware(run_limit=1, exit_behavior="end"),
        [tool_call("pay", {"amount": 5000}, "p1"), tool_call("read", {"item": "a"}, "r1")],
    )
    assert ledger.runs == []
    assert all(n == 1 for turn in turns for n in turn.values()), turns
