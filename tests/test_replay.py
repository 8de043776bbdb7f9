"""The policy regression kit: record decisions, replay them against a candidate policy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import POLICIES
from opa_process import OPAProcess
from test_guard_node import INTERNAL, mixed_turn_model

from langchain_opa_guard import (
    DecisionLog,
    EmbeddedPolicy,
    OPAServer,
    PolicyEngine,
    PolicyGuardNode,
)
from langchain_opa_guard.demo import build_agent, customer_db_tools
from langchain_opa_guard.ops.decision_log import read_decision_log
from langchain_opa_guard.ops.replay import assert_no_decision_changes, replay


def record(engine: PolicyEngine, path: Path) -> None:
    tools, _ = customer_db_tools()
    log = DecisionLog(path)
    guard = PolicyGuardNode(engine, registry=tools, decision_log=log)
    graph = build_agent(engine, mixed_turn_model(), tools, guard=guard)
    graph.invoke({"messages": [("user", "go")]}, context={"user": INTERNAL})
    log.close()


def candidate(tmp_path: Path) -> Path:
    """Today's policy, except that internal users may no longer read customers at all."""
    copy = tmp_path / "candidate"
    shutil.copytree(POLICIES, copy, ignore=shutil.ignore_patterns("*_test.rego"))
    data = json.loads((copy / "data.json").read_text())
    data["agent"]["config"]["tool_roles"]["get_customer_details"] = ["admin"]
    (copy / "data.json").write_text(json.dumps(data))
    return copy


def test_the_log_holds_input_decision_and_revision(engine: PolicyEngine, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    record(engine, log)
    # Decisions of a turn are made concurrently on a server: the log is in completion order.
    records = {r["call_id"]: r for r in read_decision_log(log)}
    assert sorted(records) == ["c-pii", "c-read", "c-upd"]
    verdicts = {k: r["decision"]["verdict"] for k, r in records.items()}
    assert verdicts == {"c-read": "allow", "c-pii": "deny", "c-upd": "deny"}
    assert records["c-read"]["input"]["tool"]["name"] == "get_customer_details"
    assert records["c-pii"]["decision"]["codes"] == ["pii_fields_for_role"]
    if engine.engine_name == "embedded":
        assert records["c-read"]["decision"]["revision"] == engine.revision  # type: ignore[attr-defined]
    else:
        assert records["c-read"]["decision"]["decision_id"]


def test_replay_reports_a_changed_decision(engine: PolicyEngine, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    record(engine, log)
    same = replay(log, engine)
    assert same.ok and same.total == 3
    assert_no_decision_changes(log, engine, strict=True)

    stricter = EmbeddedPolicy(candidate(tmp_path))
    changed = replay(log, stricter)
    assert [(c.call_id, c.before["verdict"], c.after.verdict) for c in changed.changed] == [
        ("c-read", "allow", "deny")
    ]  # one change, wherever it sits in the log
    with pytest.raises(AssertionError, match="c-read"):
        assert_no_decision_changes(log, stricter)


def test_replay_against_a_candidate_opa(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    record(EmbeddedPolicy(POLICIES), log)
    with OPAProcess([candidate(tmp_path)]) as opa:
        report = replay(log, OPAServer(opa.url))
    assert [c.call_id for c in report.changed] == ["c-read"]


def test_the_replay_command(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    record(EmbeddedPolicy(POLICIES), log)
    run: Any = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "langchain_opa_guard", "replay", str(log), *args],
        capture_output=True,
        text=True,
    )
    unchanged = run("--policy", str(POLICIES))
    assert unchanged.returncode == 0, unchanged.stderr
    assert "3 decisions replayed: 0 would change" in unchanged.stdout
    changed = run("--policy", str(candidate(tmp_path)))
    assert changed.returncode == 1
    assert "changed  line 1: get_customer_details (c-read): allow -> deny" in changed.stdout
