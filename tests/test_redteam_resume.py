"""Red team: approvals and resumes (interrupt, interrupt_before, several resumes,
concurrent resumes, abandoned pauses, policy changes while a turn waits)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import (
    POLICY,
    USER,
    Ledger,
    Script,
    agent_graph,
    answers_per_turn,
    node_graph,
)
from opa_process import OPAProcess

from langchain_opa_guard import EmbeddedPolicy, OPAServer, PolicyEngine
from langchain_opa_guard.testing import tool_call

APPROVE = {"decisions": [{"type": "approve"}]}


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


def build(kind: str, engine: PolicyEngine, script: Script, ledger: Ledger, **kw: Any) -> Any:
    maker = node_graph if kind == "node" else agent_graph
    return maker(engine, script, ledger, checkpointer=InMemorySaver(), **kw)


def ask_script() -> Script:
    return Script(
        [
            AIMessage("", tool_calls=[tool_call("send", {"to": "a@ask.test", "body": "x"}, "s1")]),
            "ok",
        ]
    )


# -- 1. two resumes of one approval at the same time ----------------------------------------


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_control_a_second_resume_after_the_first_runs_nothing(
    engine: PolicyEngine, kind: str
) -> None:
    ledger = Ledger()
    graph = build(kind, engine, ask_script(), ledger)
    config = {"configurable": {"thread_id": f"seq-{kind}"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    graph.invoke(Command(resume=APPROVE), config, context={"user": USER})
    graph.invoke(Command(resume=APPROVE), config, context={"user": USER})
    assert len(ledger.runs) == 1


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_two_concurrent_resumes_run_the_approved_call_once(engine: PolicyEngine, kind: str) -> None:
    """A UI that sends the approval twice (double click, a retried request): README
    "Nothing runs twice"."""
    ledger = Ledger()
    graph = build(kind, engine, ask_script(), ledger)
    config = {"configurable": {"thread_id": f"twice-{kind}"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert ledger.runs == []
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def resume() -> None:
        barrier.wait()
        try:
            graph.invoke(Command(resume=APPROVE), config, context={"user": USER})
        except BaseException as exc:  # noqa: BLE001 - a refused second resume is fine
            errors.append(exc)

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ledger.runs) <= 1, f"the approved send ran {len(ledger.runs)} times: {ledger.runs}"


# -- 2. a resume value given at an interrupt_before pause ------------------------------------


def test_an_approval_is_only_taken_for_a_request_the_reviewer_was_shown(
    engine: PolicyEngine,
) -> None:
    """interrupt_before=["guard"] pauses twice on an approval turn: before the guard decides,
    and before its approval task. A UI that continues through plain pauses with ``None``
    and answers a question by its interrupt id approves only what it was shown (README,
    Human approval: a bare resume value given at a plain pause would answer the next
    question, as everywhere in LangGraph)."""
    ledger = Ledger()
    script = Script(
        [
            AIMessage(
                "", tool_calls=[tool_call("send", {"to": "mallory@ask.test", "body": "x"}, "s1")]
            ),
            "ok",
        ]
    )
    graph = build("node", engine, script, ledger, interrupt_before=["guard"])
    config = {"configurable": {"thread_id": "blind"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    shown: list[Any] = []
    for _ in range(6):
        state = graph.get_state(config)
        if not state.next:
            break
        if not state.interrupts:
            assert ledger.runs == [], "a call ran before its approval request was shown"
            graph.invoke(None, config, context={"user": USER})
            continue
        shown += [i.value for i in state.interrupts]
        answer = {i.id: {"decisions": [{"type": "reject"}]} for i in state.interrupts}
        graph.invoke(Command(resume=answer), config, context={"user": USER})
    assert shown and shown[0]["requests"][0]["tool_call_id"] == "s1"
    assert ledger.runs == []  # the reviewer saw it and rejected it


# -- 3. a pause that is never answered -------------------------------------------------------


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_a_turn_left_waiting_still_gets_one_answer_per_call(
    engine: PolicyEngine, kind: str
) -> None:
    """The user does not answer the approval and types a new message instead (a chat UI):
    nothing runs, and no call is answered twice."""
    ledger = Ledger()
    script = Script(
        [
            AIMessage("", tool_calls=[tool_call("send", {"to": "a@ask.test", "body": "x"}, "s1")]),
            "ok",
        ]
    )
    graph = build(kind, engine, script, ledger)
    config = {"configurable": {"thread_id": f"left-{kind}"}}
    first = graph.invoke({"messages": [("user", "send it")]}, config, context={"user": USER})
    assert first["__interrupt__"]
    result = graph.invoke({"messages": [("user", "never mind")]}, config, context={"user": USER})
    # A question left open never approves anything. (The middleware's before_agent answers
    # the waiting call as not run; the guard node's graph here has no answer_open_calls
    # before its agent, so there the call stays unanswered: README, Human approval.)
    assert ledger.runs == []
    assert all(n <= 1 for turn in answers_per_turn(result["messages"]) for n in turn.values())


# -- 4. the policy changes while a turn waits (OPA server, no bundle) ------------------------

REVOCABLE = """package redteam_revoke

ask := {"code": "ask", "message": "a human must approve"}

revoked := {"code": "revoked", "message": "this user was revoked"}

default decision := {
	"allow": false,
	"require_approval": true,
	"reasons": [{"code": "ask", "message": "a human must approve"}],
}

decision := {"allow": false, "reasons": [revoked]} if data.revoked[input.user.id]
"""


def test_an_approval_is_not_honoured_after_the_policy_revokes_the_user(tmp_path: Path) -> None:
    """README "Resume re-checks": an approval is not honoured for a call the policy now
    denies. Here OPA runs as in the README (`opa run --server policies/`, no bundle) and
    the user is revoked through OPA's Data API while the send waits for a reviewer."""
    (tmp_path / "revoke.rego").write_text(REVOCABLE)
    with OPAProcess([tmp_path], log_path=tmp_path / "opa.log") as opa:
        engine = OPAServer(opa.url, policy="redteam_revoke/decision")
        try:
            ledger = Ledger()
            graph = build("node", engine, ask_script(), ledger)
            config = {"configurable": {"thread_id": "revoked"}}
            first = graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
            assert first["__interrupt__"]
            reply = httpx.put(f"{opa.url}/v1/data/revoked", json={USER["id"]: True})
            assert reply.status_code == 204
            now = engine.decide({"version": 1, "user": USER, "tool": {"name": "send", "args": {}}})
            assert not now.allow and not now.require_approval  # the policy now denies
            graph.invoke(Command(resume=APPROVE), config, context={"user": USER})
            assert ledger.runs == [], "the send ran for a revoked user"
        finally:
            engine.close()


# -- 5. two approvals pending at once (parallel subgraphs) -----------------------------------


def test_one_bare_answer_never_approves_two_pending_requests(engine: PolicyEngine) -> None:
    from langgraph.graph import START, MessagesState, StateGraph

    ledger = Ledger()

    def script_for(to: str) -> Script:
        call = tool_call("send", {"to": to, "body": "x"}, f"s-{to}")
        return Script([AIMessage("", tool_calls=[call]), "ok"])

    builder = StateGraph(MessagesState)
    builder.add_node("a", node_graph(engine, script_for("alice@ask.test"), ledger))
    builder.add_node("b", node_graph(engine, script_for("mallory@ask.test"), ledger))
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "two-pending"}}
    first = graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert len(first["__interrupt__"]) == 2
    with pytest.raises(RuntimeError, match="multiple pending interrupts"):
        graph.invoke(Command(resume="approve"), config, context={"user": USER})
    assert ledger.runs == []
