"""Red team 43, part A: attacks on the "turn still out" rule that held (all pass here).

1. ``Command(resume={id: approve}, goto=["guard", "guard"])``: one plain guard task, which
   decides nothing; each call of the turn runs once.
2. A tool that itself calls ``interrupt()``, then ``Command(resume=..., goto="guard")``:
   the plain guard task finds the turn still out; each call runs once.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage
from langgraph.types import Command
from mediation_kit import (
    APPROVE,
    GOTO_GUARD_DECIDES_AGAIN,
    READ,
    answers_after,
    mediation_engine,  # noqa: F401 - the engine fixture
    messages,
    paused,
    read_waiting,
    run,
    runs_of,
)

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call

MODES = ("sync", "async")


@GOTO_GUARD_DECIDES_AGAIN
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_resume_with_goto_guard_twice_runs_the_turn_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    graph, ledger, config, question = paused(kind, engine, mode, f"rt43-pin-list-{kind}-{mode}")
    run(graph, Command(resume={question.id: APPROVE}, goto=["guard", "guard"]), config, mode)
    assert not graph.get_state(config).interrupts
    assert runs_of(ledger, "r1") == 1 and runs_of(ledger, "s1") == 1, ledger.runs
    assert sorted(answers_after(messages(graph, config), "a1")) == ["r1", "s1"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_tool_interrupt_resumed_with_goto_guard_runs_each_call_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    message = AIMessage(
        "",
        tool_calls=[tool_call("read", READ, "r1"), tool_call("read", {"item": "j"}, "r2")],
        id="a1",
    )
    graph, ledger, config, waiting = read_waiting(
        engine, kind, mode, f"rt43-pin-tool-interrupt-{kind}-{mode}", message
    )
    assert len(waiting) == 2 and ledger.runs == []
    run(graph, Command(resume={i.id: True for i in waiting}, goto="guard"), config, mode)
    assert runs_of(ledger, "r1") == 1 and runs_of(ledger, "r2") == 1, ledger.runs
    assert sorted(answers_after(messages(graph, config), "a1")) == ["r1", "r2"]
