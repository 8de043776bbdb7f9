"""Red team 41: human approval (interrupt / resume) attacked in every wiring.

Each test proposes a turn the mediation policy (``tests/policies/mediation.rego``) partly
sends to a reviewer, then answers it in some hostile way, on the guard node, the guard's
edge and the ``create_agent`` middleware, sync and async, with an ``InMemorySaver``; the
``ToolNode`` interceptor, which treats ``require_approval`` as a deny, is checked to never
pause and never run such a call. The promise checked each time: a call runs only when the
policy allowed exactly it, or a reviewer approved exactly it; a denied call never runs; an
approved call runs once; every call gets exactly one answer.
Nothing here broke on this branch: these tests pin what was tried (they pass).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import (
    APPROVE,
    ASK,
    REJECT,
    Ledger,
    approval_graph,
    assert_one_answer_per_id,
    interceptor_react_agent,
    mediation_engine,  # noqa: F401 - the engine fixture
    messages,
    run,
    thread_config,
    turn,
)
from pydantic import ValidationError

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.guards.approval import VALIDATING
from langchain_opa_guard.testing import tool_call

KINDS = ("node", "edge", "middleware")
MODES = ("sync", "async")

SEND = tool_call("send", ASK, "s1")


def edit(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "edit", "edited_action": {"name": name, "args": args}}


# -- wrong shapes of answers -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "answer",
    [
        {"decisions": []},
        {"decisions": [{"type": "approve"}, {"type": "approve"}]},
        {"decisions": [{"type": "approve", "args": {"to": "z@evil.test"}}]},
        {"decisions": {"s1": {"type": "approve"}}},
        {"s1": "approve"},
        ["approve"],
        "yes",
        True,
        {"type": "approve", "tool_call_id": "s1"},
        {"decisions": [{"type": "edit", "edited_action": {"name": "send"}}]},
    ],
    ids=lambda a: repr(a)[:40],
)
def test_a_wrong_answer_runs_nothing_and_the_question_stays(
    engine: EmbeddedPolicy, kind: str, mode: str, answer: Any
) -> None:
    ledger = Ledger()
    graph = approval_graph(kind, engine, [turn(SEND), "ok"], ledger)
    config = thread_config(f"wrong-{kind}-{mode}-{id(answer)}")
    first = run(graph, {"messages": [("user", "go")]}, config, mode)
    assert first["__interrupt__"]
    if not VALIDATING:  # a LangGraph without response_schema: the answer rejects the call
        run(graph, Command(resume=answer), config, mode)
        assert ledger.runs == [] and not graph.get_state(config).interrupts
        assert_one_answer_per_id(messages(graph, config))
        return
    with pytest.raises(ValidationError):
        run(graph, Command(resume=answer), config, mode)
    assert ledger.runs == []
    run(graph, Command(resume=APPROVE), config, mode)
    assert ledger.runs == [("send", "s1", ASK)]
    assert_one_answer_per_id(messages(graph, config))


# -- edits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        (edit("send", {"to": "z@evil.test", "body": "x"}), []),  # the policy denies the edit
        (edit("pay", {"amount": 5}), []),  # another tool
        (edit("read", {"item": "x"}), []),  # another tool the policy allows
        (
            edit("send", {"to": "b@ok.test", "body": "y"}),
            [("send", "s1", {"to": "b@ok.test", "body": "y"})],
        ),
        (
            edit("send", {"to": "b@ask.test", "body": "y"}),
            [("send", "s1", {"to": "b@ask.test", "body": "y"})],
        ),
        (edit("send", {"to": "z@evil.test", "body": "x", "tool_call_id": "zz"}), []),
        (edit("send", {"to": ["z@evil.test"], "body": "x"}), []),
        (edit("send", {"to": "b@ok.test"}), []),  # missing a required field
        (
            edit("send", {"to": "b@ok.test", "body": "y", "extra": "z@evil.test"}),
            [("send", "s1", {"to": "b@ok.test", "body": "y"})],
        ),
    ],
    ids=lambda v: repr(v)[:60],
)
def test_an_edit_runs_only_as_the_policy_and_the_reviewer_both_allow(
    engine: EmbeddedPolicy, kind: str, mode: str, decision: Any, expected: Any
) -> None:
    ledger = Ledger()
    graph = approval_graph(kind, engine, [turn(SEND), "ok"], ledger)
    config = thread_config(f"edit-{kind}-{mode}-{id(decision)}")
    run(graph, {"messages": [("user", "go")]}, config, mode)
    run(graph, Command(resume={"decisions": [decision]}), config, mode)
    assert ledger.runs == expected
    assert_one_answer_per_id(messages(graph, config))


# -- a mixed turn ----------------------------------------------------------------------------

MIXED = [
    tool_call("read", {"item": "i"}, "r1"),
    tool_call("pay", {"amount": 5000}, "p1"),  # denied
    tool_call("send", {"to": "a@ask.test", "body": "x"}, "s1"),  # approval
    tool_call("search", {"scope": "all", "limit": 50}, "q1"),  # approval
    tool_call("send", {"to": "b@evil.test", "body": "x"}, "s2"),  # denied
    tool_call("search", {"scope": "docs", "limit": 50}, "q2"),  # allowed, rewritten
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("decisions", "expected"),
    [
        (
            [{"type": "approve"}, {"type": "reject"}],
            {("send", "s1", (("body", "x"), ("to", "a@ask.test")))},
        ),
        (
            [{"type": "respond", "message": "done"}, {"type": "approve"}],
            {("search", "q1", (("limit", 50), ("scope", "all")))},
        ),
        (
            [
                edit("send", {"to": "c@evil.test", "body": "x"}),
                edit("search", {"scope": "docs", "limit": 99}),
            ],
            {("search", "q1", (("limit", 10), ("scope", "docs")))},
        ),
    ],
)
def test_a_mixed_turn_runs_exactly_what_was_allowed_or_approved(
    engine: EmbeddedPolicy, kind: str, mode: str, decisions: Any, expected: Any
) -> None:
    ledger = Ledger()
    graph = approval_graph(kind, engine, [turn(*MIXED), "ok"], ledger)
    config = thread_config(f"mixed-{kind}-{mode}-{id(decisions)}")
    first = run(graph, {"messages": [("user", "go")]}, config, mode)
    (question,) = first["__interrupt__"]
    assert [r["tool_call_id"] for r in question.value["requests"]] == ["s1", "q1"]
    assert ledger.runs == []  # nothing of the turn before the answer
    run(graph, Command(resume={"decisions": decisions}), config, mode)
    ran = {(n, i, tuple(sorted(a.items()))) for n, i, a in ledger.runs}
    base = {("read", "r1", (("item", "i"),)), ("search", "q2", (("limit", 10), ("scope", "docs")))}
    assert ran == base | expected
    assert len(ledger.runs) == len(ran)
    assert_one_answer_per_id(messages(graph, config))


# -- answering again -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "first_answer", [REJECT, {"decisions": [{"type": "respond", "message": "by hand"}]}, APPROVE]
)
def test_a_second_answer_after_the_first_runs_nothing_more(
    engine: EmbeddedPolicy, kind: str, mode: str, first_answer: Any
) -> None:
    ledger = Ledger()
    graph = approval_graph(kind, engine, [turn(SEND), "ok"], ledger)
    config = thread_config(f"again-{kind}-{mode}-{id(first_answer)}")
    first = run(graph, {"messages": [("user", "go")]}, config, mode)
    (question,) = first["__interrupt__"]
    run(graph, Command(resume=first_answer), config, mode)
    before = list(ledger.runs)
    run(graph, Command(resume=APPROVE), config, mode)
    run(graph, Command(resume={question.id: APPROVE}), config, mode)
    assert ledger.runs == before
    assert len(before) == (1 if first_answer is APPROVE else 0)
    assert_one_answer_per_id(messages(graph, config))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "second",
    [APPROVE, {"decisions": [edit("send", {"to": "b@ok.test", "body": "other"})]}],
    ids=["approve", "edit"],
)
def test_an_answer_addressed_again_to_the_questions_checkpoint_runs_the_call_once(
    engine: EmbeddedPolicy, kind: str, mode: str, second: Any
) -> None:
    """Time travel to the paused checkpoint after the question was answered and the call
    ran: a second answer there (a second reviewer, a UI that kept the checkpoint) must not
    run the call again, whatever arguments it gives (README: a second answer to a question
    already answered answers each call without running it again)."""
    ledger = Ledger()
    graph = approval_graph(kind, engine, [turn(SEND), "ok"], ledger)
    config = thread_config(f"fork-{kind}-{mode}-{id(second)}")
    first = run(graph, {"messages": [("user", "go")]}, config, mode)
    (question,) = first["__interrupt__"]
    asked_at = graph.get_state(config).config
    run(graph, Command(resume={question.id: APPROVE}), asked_at, mode)
    assert ledger.runs == [("send", "s1", ASK)]
    run(graph, Command(resume={question.id: second}), asked_at, mode)
    assert ledger.runs == [("send", "s1", ASK)]
    assert_one_answer_per_id(messages(graph, config))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_rejection_then_a_forked_approval_runs_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    """Reject, then answer the same question again from its checkpoint with an approval:
    LangGraph forks; the call may run in that fork (a reviewer approved exactly it) but only
    once, and the fork's history answers it once."""
    ledger = Ledger()
    graph = approval_graph(kind, engine, [turn(SEND), "ok"], ledger)
    config = thread_config(f"rej-fork-{kind}-{mode}")
    first = run(graph, {"messages": [("user", "go")]}, config, mode)
    (question,) = first["__interrupt__"]
    asked_at = graph.get_state(config).config
    run(graph, Command(resume={question.id: REJECT}), asked_at, mode)
    assert ledger.runs == []
    run(graph, Command(resume={question.id: APPROVE}), asked_at, mode)
    run(graph, Command(resume={question.id: APPROVE}), asked_at, mode)
    assert len(ledger.runs) <= 1
    assert all(r == ("send", "s1", ASK) for r in ledger.runs)
    assert_one_answer_per_id(messages(graph, config))


# -- answers meant for another question ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_an_answer_keyed_by_another_threads_question_approves_nothing(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    ledger = Ledger()
    graph = approval_graph(kind, engine, [turn(SEND), "ok"], ledger)
    other = approval_graph(
        kind,
        engine,
        [turn(tool_call("send", {"to": "o@ask.test", "body": "o"}, "s1")), "ok"],
        Ledger(),
    )
    a, b = thread_config(f"thr-a-{kind}-{mode}"), thread_config(f"thr-b-{kind}-{mode}")
    run(graph, {"messages": [("user", "go")]}, a, mode)
    (theirs,) = run(other, {"messages": [("user", "go")]}, b, mode)["__interrupt__"]
    with contextlib.suppress(Exception):  # refusing it is fine
        run(graph, Command(resume={theirs.id: APPROVE}), a, mode)
    assert ledger.runs == []
    assert graph.get_state(a).interrupts  # still asked


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_an_answer_keyed_by_an_earlier_turns_question_approves_nothing_now(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    """Turn 1 asks for s1 and is approved; turn 2 asks for s9 (same tool, other address).
    The approval of turn 1, keyed by its interrupt id, sent again, must not approve s9."""
    ledger = Ledger()
    later = tool_call("send", {"to": "evil@ask.test", "body": "secret"}, "s9")
    graph = approval_graph(kind, engine, [turn(SEND), turn(later, id="a2"), "ok"], ledger)
    config = thread_config(f"earlier-{kind}-{mode}")
    (q1,) = run(graph, {"messages": [("user", "go")]}, config, mode)["__interrupt__"]
    second = run(graph, Command(resume={q1.id: APPROVE}), config, mode)
    (q2,) = second["__interrupt__"]
    assert q2.id != q1.id
    with contextlib.suppress(Exception):  # refusing it is fine
        run(graph, Command(resume={q1.id: APPROVE}), config, mode)
    assert ledger.runs == [("send", "s1", ASK)]


# -- the same call id in a later turn --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("answer2", [REJECT, APPROVE], ids=["reject", "approve"])
def test_a_later_turn_reusing_an_approved_call_id_is_asked_again(
    engine: EmbeddedPolicy, kind: str, mode: str, answer2: Any
) -> None:
    ledger = Ledger()
    again = tool_call("send", {"to": "evil@ask.test", "body": "secret"}, "s1")
    graph = approval_graph(kind, engine, [turn(SEND), turn(again, id="a2"), "ok"], ledger)
    config = thread_config(f"reuse-{kind}-{mode}-{id(answer2)}")
    run(graph, {"messages": [("user", "go")]}, config, mode)
    second = run(graph, Command(resume=APPROVE), config, mode)
    assert ledger.runs == [("send", "s1", ASK)]
    (q2,) = second["__interrupt__"]
    assert q2.value["requests"][0]["args"]["to"] == "evil@ask.test"
    run(graph, Command(resume=answer2), config, mode)
    expected = [("send", "s1", ASK)]
    if answer2 is APPROVE:
        expected.append(("send", "s1", {"to": "evil@ask.test", "body": "secret"}))
    assert ledger.runs == expected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_later_turn_reusing_a_denied_call_id_for_an_allowed_call(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    ledger = Ledger()
    bad = tool_call("send", {"to": "z@evil.test", "body": "x"}, "s1")
    ok = tool_call("send", {"to": "z@ask.test", "body": "x"}, "s1")
    graph = approval_graph(kind, engine, [turn(bad), turn(ok, id="a2"), "ok"], ledger)
    config = thread_config(f"reuse-denied-{kind}-{mode}")
    first = run(graph, {"messages": [("user", "go")]}, config, mode)
    assert ledger.runs == []
    (q,) = first["__interrupt__"]
    assert q.value["requests"][0]["args"]["to"] == "z@ask.test"
    run(graph, Command(resume=APPROVE), config, mode)
    assert ledger.runs == [("send", "s1", {"to": "z@ask.test", "body": "x"})]


# -- the interceptor never pauses ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_the_interceptor_treats_approval_as_a_deny_and_ignores_resumes(
    engine: EmbeddedPolicy, mode: str
) -> None:
    ledger = Ledger()
    graph = interceptor_react_agent(
        engine, ledger, [SEND, tool_call("read", {"item": "i"}, "r1")], checkpointer=InMemorySaver()
    )
    config = thread_config(f"icpt-{mode}")
    result = run(graph, {"messages": [("user", "go")]}, config, mode)
    assert "__interrupt__" not in result
    run(graph, Command(resume=APPROVE), config, mode)
    assert ledger.runs == [("read", "r1", {"item": "i"})]
    assert_one_answer_per_id(messages(graph, config))
