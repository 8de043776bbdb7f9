"""Red team 43, part A: attacks on the "turn still out" rule that held (all pass here).

1. ``Command(resume={id: approve}, goto=["guard", "guard"])``: one plain guard task, which
   decides nothing; each call of the turn runs once.
2. A tool that itself calls ``interrupt()``, then ``Command(resume=..., goto="guard")``:
   the plain guard task finds the turn still out; each call runs once.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import (
    APPROVE,
    GOTO_GUARD_DECIDES_AGAIN,
    READ,
    Ledger,
    Script,
    answers_after,
    confirming_read,
    mediation_engine,  # noqa: F401 - the engine fixture
    messages,
    node_graph,
    paused,
    run,
    runs_of,
    thread_config,
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
    ledger = Ledger()
    turn = AIMessage(
        "",
        tool_calls=[tool_call("read", READ, "r1"), tool_call("read", {"item": "j"}, "r2")],
        id="a1",
    )
    graph = node_graph(
        engine,
        Script([turn, "ok", "ok"]),
        ledger,
        checkpointer=InMemorySaver(),
        wiring=kind,
        read_tool=confirming_read(ledger),
    )
    config = thread_config(f"rt43-pin-tool-interrupt-{kind}-{mode}")
    run(graph, {"messages": [("user", "go")]}, config, mode)
    waiting = graph.get_state(config).interrupts
    assert len(waiting) == 2 and ledger.runs == []
    run(graph, Command(resume={i.id: True for i in waiting}, goto="guard"), config, mode)
    assert runs_of(ledger, "r1") == 1 and runs_of(ledger, "r2") == 1, ledger.runs
    assert sorted(answers_after(messages(graph, config), "a1")) == ["r1", "r2"]
