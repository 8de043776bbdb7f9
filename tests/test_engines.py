"""Both engines against the project's policies and the decision shapes, on a real OPA."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from conftest import TEST_POLICIES

from langchain_opa_guard import Decision, EmbeddedPolicy, ErrorType, OPAServer, PolicyEngine
from langchain_opa_guard.demo import load_scenarios

SCENARIOS = load_scenarios()


def scenario_input(tool: str, args: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    call = {
        "name": tool,
        "args": args,
        "call_id": "call-1",
        "metadata": {"toolkit": "CustomerDBTool"},
    }
    return {
        "version": 1,
        "tool": call,
        "user": user,
        "context": {"thread_id": "t-1", "node": "guard", "step": 2},
        "turn": [call],
        "history": [],
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_five_scenarios(engine: PolicyEngine, scenario: Any) -> None:
    decision = engine.decide(scenario_input(scenario.tool, scenario.args, scenario.user))
    assert decision.error is None
    assert decision.verdict == scenario.expect
    if scenario.expect == "deny":
        assert decision.reasons and all(isinstance(r, str) and r for r in decision.reasons)
    else:
        assert decision.reasons == ()


def test_internal_user_may_not_read_pii(engine: PolicyEngine) -> None:
    """The widely copied policy checks only the role on reads; ours checks the fields too."""
    internal = {"id": "user-456", "role": "internal_user"}
    admin = {"id": "user-123", "role": "admin"}
    for fields in ({"name": True, "email": True}, {"phone": True}, {}):
        args = {"customer_id": "CUST-001", "fields": fields}
        decision = engine.decide(scenario_input("get_customer_details", args, internal))
        assert not decision.allow, fields
        assert any("PII" in reason for reason in decision.reasons)
    args = {"customer_id": "CUST-001", "fields": {"name": True, "email": True}}
    assert engine.decide(scenario_input("get_customer_details", args, admin)).allow


def test_opa_returns_a_decision_id(opa_server: OPAServer) -> None:
    scenario = SCENARIOS[0]
    decision = opa_server.decide(scenario_input(scenario.tool, scenario.args, scenario.user))
    assert decision.engine == "opa" and decision.policy == "agent/authz/decision"
    assert decision.decision_id and len(decision.decision_id) >= 16


def test_async_matches_sync(engine: PolicyEngine) -> None:
    inputs = [scenario_input(s.tool, s.args, s.user) for s in SCENARIOS]

    async def run() -> list[Decision]:
        return await engine.adecide_many(inputs)

    together = asyncio.run(run())
    one_by_one = [engine.decide(i) for i in inputs]
    assert [d.verdict for d in together] == [s.expect for s in SCENARIOS]
    assert [d.reasons for d in together] == [d.reasons for d in one_by_one]


# -- the three decision shapes, and the shapes that must fail closed ---------------------


def shape_engines(opa_url: str, path: str) -> list[PolicyEngine]:
    return [EmbeddedPolicy(TEST_POLICIES, policy=path), OPAServer(opa_url, policy=path)]


@pytest.mark.parametrize(
    ("path", "tool", "allow", "reasons"),
    [
        ("shapes/object_decision", "ok", True, ()),
        ("shapes/object_decision", "bad", False, ("nope",)),
        ("shapes/boolean_decision", "ok", True, ()),
        ("shapes/boolean_decision", "bad", False, ("denied by policy",)),
        ("shapes/deny_set", "ok", True, ()),
        ("shapes/deny_set", "bad", False, ("tool is not ok",)),
        ("shapes/deny_set", "twice", False, ("second reason", "tool is not ok")),
    ],
)
def test_decision_shapes(
    opa_url: str, path: str, tool: str, allow: bool, reasons: tuple[str, ...]
) -> None:
    for engine in shape_engines(opa_url, path):
        decision = engine.decide({"tool": {"name": tool}})
        assert (decision.allow, decision.reasons, decision.error) == (allow, reasons, None), engine


def test_approval_shape(opa_url: str) -> None:
    for engine in shape_engines(opa_url, "data.shapes.approval"):
        decision = engine.decide({"tool": {"name": "x"}})
        assert not decision.allow and decision.require_approval
        assert decision.verdict == "approval" and decision.reasons == ("a human must approve",)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("shapes/undefined_decision", ErrorType.UNDEFINED),
        ("shapes/number_decision", ErrorType.MALFORMED),
        ("shapes/object_without_allow", ErrorType.MALFORMED),
        ("shapes/allow_not_bool", ErrorType.MALFORMED),
    ],
)
def test_bad_shapes_fail_closed(opa_url: str, path: str, error: str) -> None:
    for engine in shape_engines(opa_url, path):
        decision = engine.decide({"tool": {"name": "ok"}})
        assert not decision.allow and decision.error == error, engine
        assert decision.reasons[0].startswith("policy engine failed: ")


def test_a_missing_policy_is_an_error_at_start_up(opa_url: str, tmp_path: Any) -> None:
    from langchain_opa_guard.engines.policy_sources import PolicyNotFoundError

    with pytest.raises(PolicyNotFoundError):
        EmbeddedPolicy(TEST_POLICIES, policy="shapes/no_such_rule")
    with pytest.raises(PolicyNotFoundError):
        OPAServer(opa_url, policy="shapes/no_such_rule")
    with pytest.raises(PolicyNotFoundError):
        OPAServer(opa_url, policy="agent/authz/desicion")  # a typo
    (tmp_path / "other.rego").write_text("package other\n\nx := 1\n")
    with pytest.raises(PolicyNotFoundError):
        EmbeddedPolicy(tmp_path)  # policies loaded, none at agent/authz/decision
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyNotFoundError):
        EmbeddedPolicy(tmp_path / "empty")
    # Unverifiable (OPA not up yet) is not an error: decisions fail closed until it is.
    assert OPAServer(f"http://127.0.0.1:{dead_port()}").verify_policy() is False
    # The policy or a data document at the path: fine.
    assert OPAServer(opa_url).verify_policy() is True
    assert OPAServer(opa_url, policy="agent/config/tool_roles").verify_policy() is True


def test_decisions_carry_the_policy_revision(embedded: EmbeddedPolicy, tmp_path: Any) -> None:
    scenario = SCENARIOS[0]
    document = scenario_input(scenario.tool, scenario.args, scenario.user)
    first = embedded.decide(document)
    assert first.revision == embedded.revision and len(first.revision or "") == 16
    import shutil

    from opa_process import ROOT

    copy = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", copy)
    engine = EmbeddedPolicy(copy)
    before = engine.decide(document).revision
    data = json.loads((copy / "data.json").read_text())
    data["agent"]["config"]["statuses"] = ["active"]
    (copy / "data.json").write_text(json.dumps(data))
    engine.reload()
    assert engine.decide(document).revision not in (None, before)


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_opa_denies_with_a_clear_reason() -> None:
    opa = OPAServer(f"http://127.0.0.1:{dead_port()}", timeout=1.0)
    decision = opa.decide(scenario_input("delete_customer", {"customer_id": "C"}, None))
    assert not decision.allow and decision.error == ErrorType.UNREACHABLE
    assert decision.reasons == ("policy engine failed: OPA is unreachable",)
    decisions = asyncio.run(opa.adecide_many([{"a": 1}, {"b": 2}, {"c": 3}]))
    assert [d.error for d in decisions] == [ErrorType.UNREACHABLE] * 3


def test_input_that_is_not_json_is_denied(engine: PolicyEngine) -> None:
    decision = engine.decide({"tool": {"name": "x", "args": {"n": float("nan")}}})
    assert not decision.allow and decision.error == ErrorType.INPUT


def test_embedded_loads_a_bundle(tmp_path: Any, opa: Any) -> None:
    """An OPA bundle built by the real ``opa build`` loads into the embedded engine."""
    import subprocess

    from opa_process import ROOT, opa_binary

    bundle = tmp_path / "bundle.tar.gz"
    subprocess.run(
        [opa_binary(), "build", "--revision", "rev-42", "-o", str(bundle), str(ROOT / "policies")],
        check=True,
        capture_output=True,
    )
    engine = EmbeddedPolicy(bundle)
    assert engine.revision == "rev-42"
    for s in SCENARIOS:
        assert engine.decide(scenario_input(s.tool, s.args, s.user)).verdict == s.expect


def test_embedded_rejects_a_broken_policy(tmp_path: Any) -> None:
    (tmp_path / "broken.rego").write_text("package agent.authz\n decision if {{{")
    with pytest.raises(ValueError, match="does not compile"):
        EmbeddedPolicy(tmp_path)


def test_embedded_reads_yaml_data_by_folder(tmp_path: Any) -> None:
    (tmp_path / "p.rego").write_text(
        "package agent.authz\n\n"
        'decision := {"allow": input.tool.name in data.agent.cfg.ok, "reasons": []}\n'
    )
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "data.yaml").write_text("cfg:\n  ok: [read]\n")
    engine = EmbeddedPolicy(tmp_path)
    assert engine.decide({"tool": {"name": "read"}}).allow
    assert not engine.decide({"tool": {"name": "write"}}).allow
    assert json.loads(json.dumps(engine.decide({"tool": {"name": "write"}}).result)) == {
        "allow": False,
        "reasons": [],
    }


def test_odd_values_reach_the_policy_intact(engine: PolicyEngine) -> None:
    """Huge integers, quotes, backslashes, control characters and non-ASCII text."""
    odd = {"n": 2**70, "s": 'a "quoted" \\ back\x1fslash é 中', "f": 1.5, "nested": [[{"k": None}]]}
    scenario = SCENARIOS[2]
    document = scenario_input(scenario.tool, {**scenario.args, **odd}, scenario.user)
    document["tool"]["name"] = 'get "customer"\x1f'
    decision = engine.decide(document)
    assert decision.error is None and not decision.allow
    assert decision.codes == ("no_rule_for_tool",)
    assert decision.reasons == ('no rule allows tool "get "customer"\x1f"',)


def test_the_policy_check_reads_a_policy_list_larger_than_a_decision_reply(opa_url: str) -> None:
    """OPA lists every module with its AST: the check at start-up is not bound by the limit
    on decision replies (a large policy was otherwise reported as OPA being unreachable)."""
    from langchain_opa_guard.engines.policy_sources import PolicyNotFoundError

    with pytest.raises(PolicyNotFoundError):
        OPAServer(opa_url, policy="shapes/no_such_rule", max_response_bytes=4096)
    small = OPAServer(opa_url, max_response_bytes=4096)
    assert small.verify_policy() is True
    assert small.decide({"version": 1}).error is None  # a decision still fits the limit
    small.close()
