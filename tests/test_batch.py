"""A turn decided in one request to OPA (``OPAServer(batch=True)``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_guard_node import INTERNAL, check_mixed_result, mixed_turn_model
from test_tracing import Recorder

from langchain_opa_guard import OPAServer, PolicyGuardNode, PolicyNotFoundError
from langchain_opa_guard.contract import call_document, policy_input
from langchain_opa_guard.demo import build_agent, customer_db_tools
from langchain_opa_guard.tracing import attributes as A


def turn_documents(names_and_fields: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    calls = [
        {"name": name, "args": args, "id": f"c{i}", "type": "tool_call"}
        for i, (name, args) in enumerate(names_and_fields)
    ]
    docs = [call_document(c, {"toolkit": "CustomerDBTool"}) for c in calls]  # type: ignore[arg-type]
    where = {"thread_id": "t", "node": "guard", "step": 2}
    return [policy_input(d, INTERNAL, where, docs, []) for d in docs]


TURN = turn_documents(
    [
        ("get_customer_details", {"customer_id": "C1", "fields": {"name": True}}),
        ("get_customer_details", {"customer_id": "C1", "fields": {"email": True}}),
        ("update_customer_status", {"customer_id": "C1", "new_status": "active"}),
        ("delete_customer", {"customer_id": "C1"}),
    ]
)


def test_one_request_gives_the_same_decisions(opa_url: str) -> None:
    single, batched = OPAServer(opa_url), OPAServer(opa_url, batch=True)
    assert batched.batches and batched.batch_path == "agent/authz/batch_decisions"
    one_by_one = [single.decide(d) for d in TURN]
    together = batched.decide_many(TURN)
    together_async = asyncio.run(batched.adecide_many(TURN))
    for got in (together, together_async):
        assert [(d.verdict, d.codes) for d in got] == [(d.verdict, d.codes) for d in one_by_one]
        assert [d.verdict for d in got] == ["allow", "deny", "deny", "deny"]
        ids = {d.decision_id for d in got}
        assert len(ids) == 1 and None not in ids  # one request, one decision-log entry


def test_inputs_that_differ_go_one_by_one(opa_url: str) -> None:
    batched = OPAServer(opa_url, batch=True)
    mixed = [TURN[0], {**TURN[1], "user": {"id": "a", "role": "admin"}}]
    decisions = batched.decide_many(mixed)
    assert [d.verdict for d in decisions] == ["allow", "allow"]
    assert decisions[0].decision_id != decisions[1].decision_id


def test_inputs_that_differ_only_in_json_type_go_one_by_one(opa_url: str) -> None:
    batched = OPAServer(opa_url, batch=True)
    # true == 1 in Python, not in Rego: the second input must be decided on its own.
    decisions = batched.decide_many([TURN[0], {**TURN[1], "version": True}])
    assert [d.verdict for d in decisions] == ["allow", "deny"]
    assert "unsupported_version" in decisions[1].codes


def test_a_missing_batch_rule_is_an_error_at_start_up(opa_url: str) -> None:
    with pytest.raises(PolicyNotFoundError):
        OPAServer(opa_url, batch="agent/authz/no_batch_here")


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_the_guard_uses_one_request_per_turn(opa_url: str, mode: str) -> None:
    engine = OPAServer(opa_url, batch=True)
    tools, db = customer_db_tools()
    rec = Recorder()
    graph = build_agent(
        engine, mixed_turn_model(), tools, guard=PolicyGuardNode(engine, registry=tools)
    )
    config = {"callbacks": [rec.handler]}
    inputs = {"messages": [("user", "go")]}
    if mode == "invoke":
        result = graph.invoke(inputs, config, context={"user": INTERNAL})
    else:
        result = asyncio.run(graph.ainvoke(inputs, config, context={"user": INTERNAL}))
    check_mixed_result(result, db)
    decisions = rec.by_name("run_guardrail")
    assert len(decisions) == 3  # still one span per call
    assert len({s.attributes[A.OPA_DECISION_ID] for s in decisions}) == 1
    guard = next(s for s in rec.spans if s.name == "guard")
    assert all(rec.parent_of(s) is guard for s in decisions)
