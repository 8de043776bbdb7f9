"""A turn paused before the tools node (a checkpoint round trip) runs on resume exactly what
the policy decided: an amount the model sent as text is decided as the number the tool's
schema reads, and a call denied for that number does not run after the resume either."""

from __future__ import annotations

from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import POLICY, USER, Ledger, Script, node_graph

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call


def run_paused(args: dict[str, object], thread: str) -> tuple[Ledger, ToolMessage]:
    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    ledger = Ledger()
    message = AIMessage("", tool_calls=[tool_call("pay", args, "p1")])
    graph = node_graph(
        engine,
        Script([message, "done"]),
        ledger,
        checkpointer=InMemorySaver(),
        interrupt_before=["tools"],
    )
    config = {"configurable": {"thread_id": thread}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    result = graph.invoke(None, config, context={"user": USER})
    return ledger, next(m for m in result["messages"] if isinstance(m, ToolMessage))


def test_a_text_amount_over_the_limit_does_not_run_after_a_resume() -> None:
    ledger, answer = run_paused({"amount": "5000"}, "resume-deny")
    assert answer.status == "error"
    assert ledger.runs == []


def test_a_text_amount_under_the_limit_runs_once_as_decided_after_a_resume() -> None:
    ledger, answer = run_paused({"amount": "50"}, "resume-allow")
    assert answer.status == "success", answer.content
    assert ledger.runs == [("pay", "p1", {"amount": 50})]
