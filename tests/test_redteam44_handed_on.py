"""Red team 44: the guard node's "turn still out" rule (``guards/handed_on.py``, since removed).

Every test here asserts the correct behaviour and fails on the branch it was written on
(``redteam44``, at 22c1530), on LangGraph 1.2 (``.venv``) and 1.0 (``.venv-min``) unless
its docstring says otherwise.

Findings:

1. Runs twice: ``Command(resume={id: approve}, goto="guard", update=<the same messages,
   with one more message inserted before the turn>)`` (``RemoveMessage(REMOVE_ALL_MESSAGES)``
   then the messages again with a note before the model's turn). The rule counts a turn
   with *more* messages before it as a new turn, so the second guard task decides it
   again: ``read`` (``r1``) and ``send`` (``s1``) run twice, each answered twice.
2. Runs twice: a tool waits in its own ``interrupt()``; ``Command(resume=..., goto="guard",
   update={"messages": [<the turn, one call's arguments edited>]})``. The edited form is
   not among the forms handed on, so the guard decides it; the resumed tools task runs the
   call with its old arguments and the guard sends it again with the new ones: one call id
   runs twice and gets two answers.
3. Liveness: ``interrupt_before=["tools"]``, then ``update_state`` of the model's message
   (its text, the calls unchanged, ``as_node="agent"``), then ``invoke(None)``. The edit
   drops the pending tools ``Send``; the guard task finds the turn "still out" (its tools
   never ran and never will), decides nothing, and the run ends with the turn's calls
   unanswered. Same for both wirings and both LangGraph versions.
4. Liveness: a tool waits in its own ``interrupt()``; the user forks the thread at the
   checkpoint after the model's turn (``update_state(<that checkpoint>, <the turn, text
   edited>, as_node="agent")``) and continues. Continued with the thread's config (the
   fork is the thread's head): no replay marker, the guard decides nothing, the calls stay
   unanswered (1.2 and 1.0). Continued with the fork's own config: works on 1.2 (a
   replay), stuck on 1.0 (no replay marker there, and the fork's tasks are new).

The rule was taken out again after red team 44 (its findings 3 and 4 left legitimate runs
undecided). The double runs here were known and open until the live-turn check
(``guards/live_turn.py``, red team 53): a second guard task's hand-over for a turn whose
calls were answered, or whose conversation is not the graph's, is not acted on, so these
pass now; the liveness tests pass.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.message import REMOVE_ALL_MESSAGES
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
    thread_config,
    turn,
)

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call

MODES = ("sync", "async")
KINDS = ("node", "edge")


def _resume_tools(graph: Any, config: Any, mode: str) -> None:
    """Answer every open interrupt (a tool's confirmation: ``True``; a question: approve)."""
    for _ in range(4):
        waiting = graph.get_state(config).interrupts
        if not waiting:
            return
        answer = {
            i.id: (
                {"decisions": [{"type": "approve"}] * len(i.value["requests"])}
                if isinstance(i.value, dict) and "requests" in i.value
                else True
            )
            for i in waiting
        }
        run(graph, Command(resume=answer), config, mode)


# -- 1. goto the guard with an update that inserts a message before the turn ----------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_resume_that_goes_to_the_guard_and_inserts_a_message_before_the_turn_runs_it_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    """Attack: while the question about ``s1`` waits, ``Command(resume={id: approve},
    goto="guard", update={"messages": [RemoveMessage(REMOVE_ALL_MESSAGES), <user>, <a
    note>, <a1>]})``: the turn unchanged, one message more before it.
    Observed: the second guard task takes ``a1`` for a new turn (more messages before it),
    asks about ``s1`` again, and once that is approved ``r1`` and ``s1`` run a second time,
    answered twice. Expected: each call runs once and has one answer (the turn is the same
    message, same calls, same arguments)."""
    graph, ledger, config, question = paused(kind, engine, mode, f"rt44-insert-{kind}-{mode}")
    user, ai = messages(graph, config)
    run(
        graph,
        Command(
            resume={question.id: APPROVE},
            goto="guard",
            update={
                "messages": [
                    RemoveMessage(id=REMOVE_ALL_MESSAGES),
                    user,
                    HumanMessage("(note from the operator)", id="note-1"),
                    ai,
                ]
            },
        ),
        config,
        mode,
    )
    approve_all(graph, config, mode)  # a second question about s1, if any: approved
    assert runs_of(ledger, "r1") == 1, f"the allowed read ran again: {ledger.runs}"
    assert runs_of(ledger, "s1") == 1, f"the approved send ran again: {ledger.runs}"
    assert sorted(answers_after(messages(graph, config), "a1")) == ["r1", "s1"]


# -- 2. goto the guard with an update that edits the arguments of a call that is out --------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_resume_that_goes_to_the_guard_and_edits_a_waiting_call_runs_the_call_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    """Attack: ``read`` (``r1``) waits in its own ``interrupt()`` (its tools task is out);
    ``Command(resume={id: True}, goto="guard", update={"messages": [<a1 with r1's item
    "j">]})``.
    Observed: the resumed tools task runs ``r1`` with ``item="i"``, and the guard task,
    finding a form it did not hand on, decides the edited turn and runs ``r1`` again with
    ``item="j"``: the call id ``r1`` ran twice and has two answers (the second after the
    model's next message). Expected: ``r1`` runs once and has one answer."""
    graph, ledger, config, waiting = read_waiting(
        engine, kind, mode, f"rt44-edit-out-{kind}-{mode}"
    )
    assert len(waiting) == 1 and ledger.runs == []
    edited = turn(tool_call("read", {"item": "j"}, "r1"))
    run(
        graph,
        Command(resume={i.id: True for i in waiting}, goto="guard", update={"messages": [edited]}),
        config,
        mode,
    )
    _resume_tools(graph, config, mode)
    assert runs_of(ledger, "r1") == 1, f"the call r1 ran twice: {ledger.runs}"
    assert answers_after(messages(graph, config), "a1") == ["r1"]


# -- 3. interrupt_before the tools, then an edit of the turn's text (liveness) ---------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_an_edit_of_the_turn_before_its_tools_then_continue_runs_the_turn(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    """Flow (LangGraph's "review tool calls" pattern): ``interrupt_before=["tools"]``; the
    run pauses with ``r1`` sent to the tools; the operator edits the model's message text
    (``update_state(config, {"messages": [<a1, new text, same calls>]}, as_node="agent")``),
    then continues (``invoke(None, config)``).
    Observed: the edit drops the pending tools task; the guard task finds ``a1`` "still
    out", decides nothing (WARNING), and the run ends: ``r1`` never runs and is never
    answered. Expected: the guard decides the turn (``r1`` is allowed): it runs once and is
    answered once."""
    ledger = Ledger()
    graph = node_graph(
        engine,
        Script([turn(tool_call("read", READ, "r1")), "ok", "ok"]),
        ledger,
        checkpointer=InMemorySaver(),
        wiring=kind,
        interrupt_before=["tools"],
    )
    config = thread_config(f"rt44-before-tools-{kind}-{mode}")
    run(graph, {"messages": [("user", "go")]}, config, mode)
    assert graph.get_state(config).next == ("tools",)
    ai = messages(graph, config)[-1]
    graph.update_state(
        config,
        {"messages": [AIMessage("Let me read that.", tool_calls=ai.tool_calls, id=ai.id)]},
        as_node="agent",
    )
    for _ in range(3):  # continue past interrupt_before=["tools"]
        run(graph, None, config, mode)
        if not graph.get_state(config).next:
            break
    state = graph.get_state(config)
    assert runs_of(ledger, "r1") == 1, (
        f"the turn was left undecided: runs={ledger.runs}, next={state.next!r}, "
        f"answers={answers_after(list(state.values['messages']), 'a1')}"
    )
    assert answers_after(list(state.values["messages"]), "a1") == ["r1"]


# -- 4. a fork at the checkpoint after the turn while a tool waits (liveness) ---------------


@pytest.mark.parametrize("continue_with", ["thread", "fork"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_fork_after_the_turn_while_a_tool_waits_runs_the_turn(
    engine: EmbeddedPolicy, kind: str, continue_with: str
) -> None:
    """Flow (time travel): ``read`` (``r1``) waits in its own ``interrupt()``; the user goes
    back to the checkpoint after the model's turn, edits the turn's text
    (``update_state(<that checkpoint>, ..., as_node="agent")``: a fork) and continues with
    ``invoke(None, <the thread's config>)`` (the fork is the thread's head) or ``<the
    fork's config>``.
    Observed: the fork's guard task finds ``a1`` "still out" (the tool waiting on the other
    branch), decides nothing, and the fork ends with ``r1`` unanswered and nothing waiting
    (``thread``: LangGraph 1.2 and 1.0; ``fork``: 1.0 only, where no replay marker is set).
    Expected: the fork decides the turn again, as a replay does: ``r1``'s tool asks
    again."""
    graph, ledger, config, waiting = read_waiting(
        engine, kind, "sync", f"rt44-fork-{kind}-{continue_with}"
    )
    assert waiting
    after_turn = [
        s
        for s in graph.get_state_history(config)
        if s.values.get("messages") and isinstance(s.values["messages"][-1], AIMessage)
    ][-1]
    ai = after_turn.values["messages"][-1]
    fork = graph.update_state(
        after_turn.config,
        {"messages": [AIMessage("Reading it now.", tool_calls=ai.tool_calls, id=ai.id)]},
        as_node="agent",
    )
    out = run(graph, None, fork if continue_with == "fork" else config, "sync")
    state = graph.get_state(config)
    assert out.get("__interrupt__") and state.next == ("tools",), (
        f"the forked turn decided nothing: next={state.next!r}, "
        f"answers={answers_after(list(state.values['messages']), 'a1')}"
    )
    _resume_tools(graph, config, "sync")
    assert runs_of(ledger, "r1") == 1, ledger.runs
    assert answers_after(messages(graph, config), "a1") == ["r1"]
