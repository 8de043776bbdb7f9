"""Red team 54: legitimate deliveries the live-turn check lets through (they pass).

A pause before the tools node and its resume; a fork from the checkpoint that holds the
guard's hand-over after the thread went on without it (README: "A fork from the checkpoint
that holds the hand-over runs it as LangGraph delivers it"); guard node and edge.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import (
    READ,
    USER,
    Ledger,
    Script,
    mediation_engine,  # noqa: F401 - the engine fixture
    node_graph,
    runs_of,
    thread_config,
    turn,
)

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call


def _paused(engine: EmbeddedPolicy, kind: str, thread: str) -> tuple[object, Ledger, dict]:
    ledger = Ledger()
    graph = node_graph(
        engine,
        Script([turn(tool_call("read", READ, "r1")), "ok", "ok", "ok"]),
        ledger,
        checkpointer=InMemorySaver(),
        interrupt_before=["tools"],
        wiring=kind,
        answer_open=True,
    )
    config = thread_config(thread)
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert graph.get_state(config).next == ("tools",)
    return graph, ledger, config


@pytest.mark.parametrize("kind", ["node", "edge"])
def test_interrupt_before_tools_then_resume_runs(engine: EmbeddedPolicy, kind: str) -> None:
    graph, ledger, config = _paused(engine, kind, f"rt54-pin-resume-{kind}")
    out = graph.invoke(None, config, context={"user": USER})
    assert runs_of(ledger, "r1") == 1
    assert [m.tool_call_id for m in out["messages"] if isinstance(m, ToolMessage)] == ["r1"]


@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_fork_from_the_hand_over_s_checkpoint_runs_it(engine: EmbeddedPolicy, kind: str) -> None:
    graph, ledger, config = _paused(engine, kind, f"rt54-pin-fork-{kind}")
    holding = graph.get_state(config).config
    graph.invoke({"messages": [("user", "never mind")]}, config, context={"user": USER})
    assert runs_of(ledger, "r1") == 0
    out = graph.invoke(None, holding, context={"user": USER})
    assert runs_of(ledger, "r1") == 1
    answers = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in answers] == ["r1"] and answers[0].status != "error"
