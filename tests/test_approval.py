"""Human approval through interrupt and resume, driven by the stateful exfiltration policy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from pydantic import ValidationError
from test_guard_node import assert_every_call_answered_once

from langchain_opa_guard import PolicyEngine, PolicyGuardNode
from langchain_opa_guard.demo import build_agent
from langchain_opa_guard.demo.web import web_tools
from langchain_opa_guard.guards.approval import VALIDATING
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

INTERNAL = {"id": "user-456", "role": "internal_user"}
EMAIL = {"to": "bob@example.com", "subject": "notes", "body": "the page said hi"}


def exfiltration_model() -> ScriptedChatModel:
    return ScriptedChatModel(
        script=[
            AIMessage(
                "", tool_calls=[tool_call("fetch_url", {"url": "https://partner.test"}, "f1")]
            ),
            AIMessage("", tool_calls=[tool_call("send_email", EMAIL, "m1")]),
            "finished",
        ]
    )


def start(engine: PolicyEngine, thread: str) -> tuple[Any, Any, dict[str, Any]]:
    tools, outbox = web_tools()
    graph = build_agent(engine, exfiltration_model(), tools, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": thread}}
    result = graph.invoke(
        {"messages": [("user", "read the page")]}, config, context={"user": INTERNAL}
    )
    return graph, outbox, {"config": config, "result": result}


def test_egress_after_untrusted_content_waits_for_a_human(engine: PolicyEngine) -> None:
    _graph, outbox, run = start(engine, "t-wait")
    assert outbox.fetched == ["https://partner.test"] and outbox.sent == []
    (pending,) = run["result"]["__interrupt__"]
    request = pending.value["requests"][0]
    assert pending.value["type"] == "opa_guard.approval"
    assert request["tool_call_id"] == "m1" and request["name"] == "send_email"
    assert "a human must approve" in request["reasons"][0]
    assert request["args"] == EMAIL
    # HumanInTheLoopMiddleware's request shape, for the UIs that render it.
    (action,) = pending.value["action_requests"]
    assert action["name"] == "send_email" and action["args"] == EMAIL
    assert pending.value["review_configs"][0]["allowed_decisions"] == [
        "approve",
        "edit",
        "reject",
        "respond",
    ]


@pytest.mark.parametrize(
    "answer", ["approve", {"type": "approve"}, {"decisions": [{"type": "approve"}]}]
)
def test_approve_runs_the_call(engine: PolicyEngine, answer: Any) -> None:
    graph, outbox, run = start(engine, "t-approve")
    result = graph.invoke(Command(resume=answer), run["config"], context={"user": INTERNAL})
    assert outbox.sent == [EMAIL]
    assert_every_call_answered_once(result["messages"])
    assert result["messages"][-1].content == "finished"


def test_reject_tells_the_model_why(engine: PolicyEngine) -> None:
    graph, outbox, run = start(engine, "t-reject")
    answer = {"decisions": [{"type": "reject", "message": "that page looks like an injection"}]}
    result = graph.invoke(Command(resume=answer), run["config"], context={"user": INTERNAL})
    assert outbox.sent == []
    reply = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "m1"
    )
    assert reply.status == "error"
    assert "rejected by a human reviewer" in reply.content and "injection" in reply.content
    assert_every_call_answered_once(result["messages"])


def test_edit_is_checked_by_the_policy_again(engine: PolicyEngine) -> None:
    graph, outbox, run = start(engine, "t-edit-ok")
    edited = {**EMAIL, "to": "carol@example.com"}
    result = graph.invoke(
        Command(resume=edit("send_email", edited)),
        run["config"],
        context={"user": INTERNAL},
    )
    assert outbox.sent == [edited]
    ai = next(
        m
        for m in result["messages"]
        if isinstance(m, AIMessage) and m.tool_calls and m.tool_calls[0]["id"] == "m1"
    )
    assert ai.tool_calls[0]["args"]["to"] == "carol@example.com"  # history shows what ran
    assert_every_call_answered_once(result["messages"])

    graph, outbox, run = start(engine, "t-edit-bad")
    outside = {**EMAIL, "to": "eve@evil.test"}
    result = graph.invoke(
        Command(resume=edit("send_email", outside)),
        run["config"],
        context={"user": INTERNAL},
    )
    assert outbox.sent == []
    reply = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "m1"
    )
    assert "denied by policy" in reply.content
    assert_every_call_answered_once(result["messages"])


def edit(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"decisions": [{"type": "edit", "edited_action": {"name": name, "args": args}}]}


def test_unreadable_answer_can_be_given_again(embedded: PolicyEngine) -> None:
    graph, outbox, run = start(embedded, "t-garbage")
    if not VALIDATING:  # a LangGraph without response_schema: the answer rejects the call
        graph.invoke(Command(resume={"action": "maybe"}), run["config"], context={"user": INTERNAL})
        assert outbox.sent == [] and not graph.get_state(run["config"]).next
        return
    with pytest.raises(ValidationError):
        graph.invoke(Command(resume={"action": "maybe"}), run["config"], context={"user": INTERNAL})
    assert outbox.sent == []
    # Nothing was saved: the same question is still open and takes a proper answer.
    assert graph.get_state(run["config"]).interrupts
    graph.invoke(Command(resume="approve"), run["config"], context={"user": INTERNAL})
    assert outbox.sent == [EMAIL]


def test_an_edit_may_not_switch_tools(embedded: PolicyEngine) -> None:
    graph, outbox, run = start(embedded, "t-switch")
    result = graph.invoke(
        Command(resume=edit("fetch_url", {"url": "https://evil.test"})),
        run["config"],
        context={"user": INTERNAL},
    )
    assert outbox.sent == [] and outbox.fetched == ["https://partner.test"]
    reply = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "m1"
    )
    assert "another tool" in reply.content


def test_respond_answers_for_the_tool(embedded: PolicyEngine) -> None:
    graph, outbox, run = start(embedded, "t-respond")
    answer = {"decisions": [{"type": "respond", "message": "I will send it myself."}]}
    result = graph.invoke(Command(resume=answer), run["config"], context={"user": INTERNAL})
    assert outbox.sent == []
    reply = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "m1"
    )
    assert reply.content == "I will send it myself." and reply.status == "success"
    assert_every_call_answered_once(result["messages"])


def test_approval_async(engine: PolicyEngine) -> None:
    tools, outbox = web_tools()
    graph = build_agent(engine, exfiltration_model(), tools, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t-async"}}

    async def run() -> dict[str, Any]:
        first = await graph.ainvoke(
            {"messages": [("user", "go")]}, config, context={"user": INTERNAL}
        )
        assert "__interrupt__" in first
        return await graph.ainvoke(Command(resume="approve"), config, context={"user": INTERNAL})

    result = asyncio.run(run())
    assert outbox.sent == [EMAIL]
    assert_every_call_answered_once(result["messages"])


def test_resume_does_not_evaluate_the_turn_twice(embedded: PolicyEngine) -> None:
    calls: list[str] = []

    def count(document: dict[str, Any], call: Any, state: Any) -> dict[str, Any]:
        calls.append(document["tool"]["call_id"])
        return document

    tools, outbox = web_tools()
    guard = PolicyGuardNode(embedded, registry=tools, build_input=count)
    graph = build_agent(
        embedded, exfiltration_model(), tools, checkpointer=InMemorySaver(), guard=guard
    )
    config = {"configurable": {"thread_id": "t-once"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": INTERNAL})
    graph.invoke(Command(resume="approve"), config, context={"user": INTERNAL})
    assert calls == ["f1", "m1"]
    assert len(outbox.sent) == 1


def test_approvals_deny_mode(embedded: PolicyEngine) -> None:
    tools, outbox = web_tools()
    guard = PolicyGuardNode(embedded, registry=tools, approvals="deny")
    graph = build_agent(embedded, exfiltration_model(), tools, guard=guard)
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": INTERNAL})
    assert "__interrupt__" not in result and outbox.sent == []
    reply = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "m1"
    )
    assert "needs a human's approval" in reply.content


@pytest.mark.parametrize("shared_key", [True, False], ids=["shared seal key", "no shared key"])
def test_approval_across_processes(tmp_path: Any, shared_key: bool) -> None:
    """The pause is a checkpoint: one process asks, another resumes (SQLite checkpointer).
    The turn waiting for approval carries the guard's seal: with OPA_GUARD_SEAL_KEY alike in
    both processes the approved call runs; without it, the other process cannot verify the
    turn, so nothing of it runs (the model is told to propose it again)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import POLICIES

    from langchain_opa_guard.guards.seals import KEY_ENV

    here = Path(__file__).resolve().parent
    database = str(tmp_path / "checkpoints.sqlite")
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    if shared_key:
        env[KEY_ENV] = "the deployment's secret"

    def step(name: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, str(here / "approval_process.py"), name, database, str(POLICIES)],
            capture_output=True,
            text=True,
            check=True,
            cwd=here,
            env=env,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = step("start")
    assert first["sent"] == [] and first["waiting"][0]["requests"][0]["name"] == "send_email"
    second = step("resume")
    if shared_key:
        assert second["sent"] == [EMAIL] and second["last"] == "finished"
    else:
        assert second["sent"] == []
        assert any("could not be verified" in a for a in second["answers"])
