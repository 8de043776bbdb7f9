"""Red team 43: the guard node's "turn still out" rule (``guards/handed_on.py``, since removed).

A plain guard task that finds a turn it handed on still out decides nothing. The rule (as
reviewed) keyed a turn by its form (how many messages come before it, the last one's id,
each call's id and digest) and forgot the turn when a tools task ended, whether the tools
ran or raised.

Findings (each test failed on the branch it was written on):

1. ``Command(resume={id: approve}, goto="guard", update={"messages": [RemoveMessage(<the
   user's first message>)]})``: the removal changes the turn's form (one message fewer
   before it), so the second guard task does not find the turn still out, decides it again
   and asks about ``s1`` a second time. Observed: ``read`` (``r1``) and ``send`` (``s1``) ran,
   then, once the second question is answered, ran again, and their second answers land
   after the model's next message. Expected (README "Nothing runs twice"): each call runs
   once and has one answer; the edit is not of the turn (same ids, same arguments).
2. A tool that raises (the run fails, the tools task stays pending), then
   ``Command(goto="guard")``: the failed task reported its calls back, so the guard task
   decides the turn again while LangGraph runs the pending tools task again. Observed:
   ``read`` ran twice. Expected: once (a failed task is not a call that came back: LangGraph
   runs it again on the next invocation).
3. Liveness, guard-node wiring: time travel (``invoke(None, <checkpoint before the
   decision>)``) while the turn's question waits, or while a tool of it waits in its own
   ``interrupt()``. Observed: the replayed guard task finds the turn "still out" (the
   question or the tool on the other branch), decides nothing, and the fork ends with the
   turn's calls unanswered and nothing to resume. Expected (README: "A replay from a
   checkpoint before the decision ... asks and decides the turn again"): the replay asks
   again (or runs the turn), as it does once the first branch has come back and as the
   guard edge's wiring does.

The rule was taken out again after red team 44 (its findings 3 and 4 left legitimate runs
undecided). The double runs here were known and open until the live-turn check
(``guards/live_turn.py``, red team 53): a second guard task's hand-over for a turn whose
calls were answered, or whose conversation is not the graph's, is not acted on, so these
pass now; the liveness tests pass.
"""

from __future__ import annotations

from typing import Annotated

import pytest
from langchain_core.messages import RemoveMessage
from langchain_core.tools import InjectedToolCallId, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import (
    APPROVE,
    READ,
    Ledger,
    Script,
    answers_after,
    approve_all,
    mediation_engine,  # noqa: F401 - the engine fixture
    messages,
    node_graph,
    paused,
    read_waiting,
    run,
    runs_of,
    send_and_read,
    thread_config,
    turn,
)

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call

MODES = ("sync", "async")


# -- 1. goto the guard with an update that changes what comes before the turn --------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_resume_that_goes_to_the_guard_and_removes_an_earlier_message_runs_the_turn_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    graph, ledger, config, question = paused(kind, engine, mode, f"rt43-remove-{kind}-{mode}")
    user = messages(graph, config)[0]
    run(
        graph,
        Command(
            resume={question.id: APPROVE},
            goto="guard",
            update={"messages": [RemoveMessage(id=str(user.id))]},
        ),
        config,
        mode,
    )
    approve_all(graph, config, mode)  # a second question about s1, if any: approved
    assert runs_of(ledger, "r1") == 1, f"the allowed read ran again: {ledger.runs}"
    assert runs_of(ledger, "s1") == 1, f"the approved send ran again: {ledger.runs}"
    assert sorted(answers_after(messages(graph, config), "a1")) == ["r1", "s1"]


# -- 2. a tool that raised, then goto the guard -------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_goto_guard_after_a_tool_raised_runs_the_call_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    ledger = Ledger()
    failed: set[str] = set()

    def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an item (fails the first time: a flaky backend)."""
        if tool_call_id not in failed:
            failed.add(tool_call_id)
            raise RuntimeError("backend unavailable")
        return ledger.record("read", tool_call_id, {"item": item})

    graph = node_graph(
        engine,
        Script([turn(tool_call("read", READ, "r1")), "ok", "ok"]),
        ledger,
        checkpointer=InMemorySaver(),
        wiring=kind,
        read_tool=StructuredTool.from_function(read),
    )
    config = thread_config(f"rt43-raised-{kind}-{mode}")
    with pytest.raises(RuntimeError, match="backend unavailable"):
        run(graph, {"messages": [("user", "go")]}, config, mode)
    assert graph.get_state(config).next == ("tools",)
    run(graph, Command(goto="guard"), config, mode)
    assert runs_of(ledger, "r1") == 1, f"the read ran twice: {ledger.runs}"
    assert answers_after(messages(graph, config), "a1") == ["r1"]


# -- 3. time travel while the turn is out (liveness) -------------------------------------------


def test_a_replay_from_before_the_decision_while_the_question_waits_asks_again(
    engine: EmbeddedPolicy,
) -> None:
    ledger = Ledger()
    graph = node_graph(
        engine,
        Script([send_and_read(), "ok", "ok"]),
        ledger,
        checkpointer=InMemorySaver(),
        wiring="node",
    )
    config = thread_config("rt43-replay-waiting")
    assert run(graph, {"messages": [("user", "go")]}, config, "sync").get("__interrupt__")
    before = [s for s in graph.get_state_history(config) if s.next == ("guard",)][-1]
    out = run(graph, None, before.config, "sync")
    assert out.get("__interrupt__"), (
        "the replayed turn decided nothing: its calls are left unanswered, nothing waits "
        f"({graph.get_state(config).next!r})"
    )
    approve_all(graph, config, "sync")
    assert sorted(i for _, i, _ in ledger.runs) == ["r1", "s1"]


def test_a_replay_from_before_the_decision_while_a_tool_waits_runs_the_turn(
    engine: EmbeddedPolicy,
) -> None:
    graph, _, config, waiting = read_waiting(engine, "node", "sync", "rt43-replay-tool-waiting")
    assert waiting
    before = [s for s in graph.get_state_history(config) if s.next == ("guard",)][-1]
    out = run(graph, None, before.config, "sync")
    state = graph.get_state(config)
    assert out.get("__interrupt__") and state.next == ("tools",), (
        f"the replayed turn decided nothing: next={state.next!r}, "
        f"answers={answers_after(list(state.values['messages']), 'a1')}"
    )
