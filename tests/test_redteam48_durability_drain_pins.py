"""Red team 48: LangGraph's durability modes, drained runs and cut-off runs, then the thread
continued (pins: nothing broke; each test asserts what was observed and expected).

The attack: the model proposes turn ``a1``: ``read`` (``r1``, allowed), ``send`` to
``b@ok.test`` (``s1``, allowed) and ``pay`` of 5000 (``p1``, denied); or the approval turn
``send`` to ``a@ask.test`` (``s2``, a human must approve) beside ``read`` (``r2``). Each run
uses ``durability="sync"``, ``"async"`` or ``"exit"`` with a checkpointer (``InMemorySaver``;
a ``SqliteSaver`` too), and is cut off after each step: LangGraph 1.2's
``RunControl.request_drain()`` (requested as each step's update arrives, so the run stops at
the next superstep boundary: after the model, after the guard's decision with its ``Send`` to
the tools pending, after the tools), or a ``recursion_limit``. The thread is then continued
with ``invoke(None)``, with a new message, with the same resume sent again, or from a second
graph object built from the same code over the same checkpointer (in this process: the
run-once claims are shared, as the README's "kept per process" allows; nothing here relies on
fresh claims). Replays from every checkpoint of ``get_state_history()`` too. Guard node, guard
edge, ``ToolCallGuard`` interceptor, ``create_agent`` middleware, and ``guard_tools`` inside a
plain ``ToolNode``.

Expected, and observed: the denied ``p1`` never runs; an allowed call runs at most once per
decision (a replay from a checkpoint before the decision runs it again, as the README's "Nothing
runs twice" documents, as LangGraph re-runs every node after that checkpoint); the call waiting
for approval runs only after the approval, once; every call of a turn has exactly one answer,
none with a traceback. (A plain ``ToolNode`` without the guard runs ``p1`` in every one of these
runs.)
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphRecursionError
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command
from mediation_kit import (
    ASK,
    READ,
    USER,
    Ledger,
    Script,
    answers_per_turn,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    thread_config,
    turn,
    wired_graph,
)

from langchain_opa_guard import (
    PolicyEngine,
)
from langchain_opa_guard.testing import tool_call

try:  # LangGraph 1.2: cooperative drain
    from langgraph.errors import GraphDrained
    from langgraph.runtime import RunControl
except ImportError:  # LangGraph 1.0
    RunControl = None
    GraphDrained = None

needs_drain = pytest.mark.skipif(
    RunControl is None, reason="RunControl/request_drain() needs LangGraph 1.2 (not in 1.0)"
)

KINDS = ("node", "edge", "interceptor", "middleware", "guard_tools")
APPROVING = ("node", "edge", "middleware")
DURABILITY = ("sync", "async", "exit")
MIXED_IDS = {"r1", "s1", "p1"}
ASKING_IDS = {"s2", "r2"}


def build(kind: str, engine: PolicyEngine, script: Script, ledger: Ledger, saver: Any) -> Any:
    """``agent -> [guard ->] tools -> agent`` (``answer_open_calls`` first) or ``create_agent``
    with the middleware, checkpointed by ``saver``."""
    tools = mediation_tools(ledger)
    return wired_graph(engine, kind, tools, script, answer_open=True, checkpointer=saver)


def mixed() -> AIMessage:
    return turn(
        tool_call("read", READ, "r1"),
        tool_call("send", {"to": "b@ok.test", "body": "x"}, "s1"),
        tool_call("pay", {"amount": 5000}, "p1"),
    )


def asking() -> AIMessage:
    return turn(tool_call("send", ASK, "s2"), tool_call("read", READ, "r2"))


def drained(graph: Any, value: Any, config: Any, after: int, durability: str) -> bool:
    """Stream ``value``; once ``after`` updates arrived (0: never), request a drain. Whether
    the run drained."""
    control = RunControl()
    seen = 0
    try:
        for _ in graph.stream(
            value,
            config,
            context={"user": USER},
            durability=durability,
            control=control,
            stream_mode="updates",
        ):
            seen += 1
            if after and seen >= after:
                control.request_drain("red team 48")
    except GraphDrained:
        return True
    return False


def go(graph: Any, value: Any, config: Any, durability: str) -> Any:
    return graph.invoke(value, config, context={"user": USER}, durability=durability)


def check(graph: Any, ledger: Ledger, config: Any, ids: set[str], where: str) -> None:
    """Nothing denied ran, nothing ran twice, each call of each turn answered once."""
    runs = Counter(call_id for _, call_id, _ in ledger.runs)
    assert runs["p1"] == 0, (where, runs)
    assert all(n <= 1 for n in runs.values()), (where, runs)
    msgs = graph.get_state(config).values.get("messages", [])
    turns = answers_per_turn(msgs)
    assert turns, where
    for answers in turns:
        assert set(answers) == ids and all(n == 1 for n in answers.values()), (where, answers)
    for m in msgs:
        if isinstance(m, ToolMessage):
            assert "Traceback" not in str(m.content), (where, m.content)
    assert graph.get_state(config).next == (), where


@needs_drain
@pytest.mark.parametrize("durability", DURABILITY)
@pytest.mark.parametrize("kind", KINDS)
def test_drained_after_each_step_then_continued(
    engine: PolicyEngine, kind: str, durability: str
) -> None:
    for after in range(1, 6):
        for then in ("invoke(None)", "new message"):
            ledger = Ledger()
            graph = build(kind, engine, Script([mixed(), "ok", "ok"]), ledger, InMemorySaver())
            config = thread_config(f"{kind}-{durability}-{after}-{then}")
            if drained(graph, {"messages": [("user", "go")]}, config, after, durability):
                value = None if then == "invoke(None)" else {"messages": [("user", "again")]}
                go(graph, value, config, durability)
            check(graph, ledger, config, MIXED_IDS, f"drained after {after}, then {then}")


@pytest.mark.parametrize("durability", DURABILITY)
@pytest.mark.parametrize("kind", KINDS)
def test_cut_by_recursion_limit_at_each_step_then_continued(
    engine: PolicyEngine, kind: str, durability: str
) -> None:
    for limit in range(1, 6):
        for then in ("invoke(None)", "new message"):
            ledger = Ledger()
            graph = build(kind, engine, Script([mixed(), "ok", "ok"]), ledger, InMemorySaver())
            config = thread_config(f"{kind}-{durability}-{limit}-{then}")
            try:
                go(
                    graph,
                    {"messages": [("user", "go")]},
                    {**config, "recursion_limit": limit},
                    durability,
                )
            except GraphRecursionError:
                value = None if then == "invoke(None)" else {"messages": [("user", "again")]}
                go(graph, value, config, durability)
            check(graph, ledger, config, MIXED_IDS, f"limit {limit}, then {then}")


@needs_drain
@pytest.mark.parametrize("durability", DURABILITY)
@pytest.mark.parametrize("kind", APPROVING)
def test_an_approval_drained_around_the_question_and_the_answer(
    engine: PolicyEngine, kind: str, durability: str
) -> None:
    """Drained before the question (then ``invoke(None)`` asks it), and again after each step
    of the approved run; continued with ``invoke(None)``, the same answer sent again, a new
    message, or ``invoke(None)`` from a second graph object over the same checkpointer."""
    for first in (0, 1, 2):
        for second in (1, 2, 3):
            for then in ("invoke(None)", "answer again", "new message", "second graph"):
                ledger = Ledger()
                saver = InMemorySaver()
                graph = build(kind, engine, Script([asking(), "ok", "ok"]), ledger, saver)
                config = thread_config(f"{kind}-{durability}-{first}-{second}-{then}")
                if drained(graph, {"messages": [("user", "go")]}, config, first, durability):
                    go(graph, None, config, durability)
                (question,) = graph.get_state(config).interrupts
                assert ledger.runs == []
                answer = Command(resume={question.id: {"decisions": [{"type": "approve"}]}})
                if drained(graph, answer, config, second, durability):
                    if then == "second graph":
                        graph = build(kind, engine, Script([asking(), "ok"]), ledger, saver)
                    value: Any = {
                        "invoke(None)": None,
                        "second graph": None,
                        "answer again": answer,
                        "new message": {"messages": [("user", "again")]},
                    }[then]
                    go(graph, value, config, durability)
                where = f"first {first}, second {second}, then {then}"
                check(graph, ledger, config, ASKING_IDS, where)
                runs = Counter(call_id for _, call_id, _ in ledger.runs)
                if then != "new message":
                    assert runs == {"s2": 1, "r2": 1}, (where, runs)


@needs_drain
@pytest.mark.parametrize("kind", KINDS)
def test_drained_with_a_sqlite_checkpointer_then_continued(engine: PolicyEngine, kind: str) -> None:
    sqlite_saver = pytest.importorskip(
        "langgraph.checkpoint.sqlite", reason="langgraph-checkpoint-sqlite is not installed"
    ).SqliteSaver

    def saver() -> Any:
        return sqlite_saver(sqlite3.connect(":memory:", check_same_thread=False))

    for durability in DURABILITY:
        for after in (1, 2, 3):
            ledger = Ledger()
            graph = build(kind, engine, Script([mixed(), "ok", "ok"]), ledger, saver())
            config = thread_config(f"sqlite-{kind}-{durability}-{after}")
            if drained(graph, {"messages": [("user", "go")]}, config, after, durability):
                go(graph, None, config, durability)
            check(graph, ledger, config, MIXED_IDS, f"sqlite {durability} drained after {after}")


def _replay_each(
    graph: Any, ledger: Ledger, config: Any
) -> list[tuple[tuple[str, ...], list[str]]]:
    out = []
    for snapshot in list(graph.get_state_history(config)):
        before = len(ledger.runs)
        graph.invoke(None, snapshot.config, context={"user": USER})
        out.append((tuple(snapshot.next), [i for _, i, _ in ledger.runs[before:]]))
    return out


@pytest.mark.parametrize("durability", DURABILITY)
@pytest.mark.parametrize("kind", KINDS)
def test_replays_from_every_checkpoint(engine: PolicyEngine, kind: str, durability: str) -> None:
    """A replay (time travel) from each checkpoint the run saved: the denied call never runs
    and each fork's turn is answered once; a replay from a checkpoint where only the tools
    wait (the decision made) runs nothing again. Replays from before the decision run the
    allowed calls again: documented (README, "Nothing runs twice")."""
    ledger = Ledger()
    graph = build(kind, engine, Script([mixed(), "ok", "ok"]), ledger, InMemorySaver())
    config = thread_config(f"replay-{kind}-{durability}")
    go(graph, {"messages": [("user", "go")]}, config, durability)
    assert sorted(i for _, i, _ in ledger.runs) == ["r1", "s1"]
    for waiting, ran in _replay_each(graph, ledger, config):
        assert "p1" not in ran, (waiting, ran)
        assert sorted(ran) in ([], ["r1", "s1"]), (waiting, ran)
        if waiting and set(waiting) == {"tools"} and kind not in ("interceptor", "guard_tools"):
            assert ran == [], (waiting, ran)
        check_answers(graph, config)


def check_answers(graph: Any, config: Any) -> None:
    for answers in answers_per_turn(graph.get_state(config).values.get("messages", [])):
        assert set(answers) == MIXED_IDS and all(n == 1 for n in answers.values()), answers


def test_the_kinds_cover_a_plain_tool_node_that_would_run_the_denied_call(
    engine: PolicyEngine,
) -> None:
    """The control: the same turn through a plain ``ToolNode`` (no guard) runs ``p1``, so the
    runs above would show it."""
    ledger = Ledger()
    tools = mediation_tools(ledger)
    script = Script([mixed(), "ok"])
    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}))
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile(checkpointer=InMemorySaver())
    go(graph, {"messages": [("user", "go")]}, thread_config("plain"), "exit")
    assert "p1" in {i for _, i, _ in ledger.runs}
