"""The decision log and its replay: what a candidate policy changes that the kit does not see.

README: "Record decisions with `DecisionLog` and replay them against a candidate policy before
rolling it out" and "A shadowed deny is evaluated, logged, traced ... and counted". These
tests record real decisions of a real embedded OPA (wasm) through the guard's own log, then
replay them as the README shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool

from langchain_opa_guard import DecisionLog, EmbeddedPolicy, guard_tools
from langchain_opa_guard.ops.decision_log import read_decision_log
from langchain_opa_guard.ops.replay import assert_no_decision_changes, replay

CLAMPING = """package rewrite

default decision := {"allow": true, "reasons": []}

decision := {
	"allow": true, "reasons": [],
	"args": {"query": input.tool.args.query, "limit": 100},
} if {
\tinput.tool.args.limit > 100
}
"""

# The candidate drops the clamp: every call still "allows", but the tool now runs with the
# model's limit (100000 rows instead of 100).
UNCLAMPED = """package rewrite

default decision := {"allow": true, "reasons": []}
"""

DENYING = """package rewrite

default decision := {"allow": false, "reasons": [{"code": "new_rule", "message": "no exports"}]}
"""


def _engine(tmp_path: Path, name: str, text: str) -> EmbeddedPolicy:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "policy.rego").write_text(text)
    return EmbeddedPolicy(folder, policy="rewrite/decision")


ran: list[dict[str, object]] = []


@tool
def export_rows(query: str, limit: int) -> str:
    """Export rows matching a query."""
    ran.append({"query": query, "limit": limit})
    return f"exported {limit} rows"


USER = {"configurable": {"user": {"id": "u-1", "role": "admin"}}}


def test_replay_reports_a_candidate_that_changes_the_arguments_a_call_runs_with(
    tmp_path: Path,
) -> None:
    """A recorded allow-with-rewrite (limit clamped to 100) replayed against a candidate that
    allows the call as the model sent it (limit 100000): the tool would run with other
    arguments, yet the replay (strict included) reports nothing."""
    ran.clear()
    log = DecisionLog(tmp_path / "decisions.jsonl")
    with _engine(tmp_path, "current", CLAMPING) as current:
        (guarded,) = guard_tools([export_rows], current, decision_log=log)
        guarded.invoke(
            {
                "type": "tool_call",
                "id": "c-1",
                "name": "export_rows",
                "args": {"query": "all", "limit": 100000},
            },
            config=USER,
        )
    log.close()
    assert ran == [{"query": "all", "limit": 100}]  # the policy in force clamped it

    with _engine(tmp_path, "candidate", UNCLAMPED) as candidate:
        report = replay(tmp_path / "decisions.jsonl", candidate, strict=True)
        assert report.total == 1
        # The candidate would run export_rows with limit=100000 where the recorded decision
        # ran it with limit=100: that is a changed decision.
        assert report.changed, report.summary()
        with pytest.raises(AssertionError):
            assert_no_decision_changes(tmp_path / "decisions.jsonl", candidate, strict=True)


def test_log_keeps_the_arguments_a_rewrite_ran_with(tmp_path: Path) -> None:
    """The log line of a rewritten call says which arguments ran (the README: "the decision
    span records hashes of the proposed and the executed arguments"); the log has neither."""
    ran.clear()
    log = DecisionLog(tmp_path / "decisions.jsonl")
    with _engine(tmp_path, "current", CLAMPING) as current:
        (guarded,) = guard_tools([export_rows], current, decision_log=log)
        guarded.invoke(
            {
                "type": "tool_call",
                "id": "c-1",
                "name": "export_rows",
                "args": {"query": "all", "limit": 100000},
            },
            config=USER,
        )
    log.close()
    (record,) = list(read_decision_log(tmp_path / "decisions.jsonl"))
    assert ran == [{"query": "all", "limit": 100}]
    assert "100" in str(record["decision"].get("args")), record["decision"]


def test_shadowed_deny_is_logged_as_the_deny_it_was(tmp_path: Path) -> None:
    """A shadowed deny runs the call; its log line must still say the policy denied it (and
    that it was shadowed). Today it reads verdict "allow", allow true, so the audit trail
    shows an allow and replaying the *same* policy reports a change."""
    ran.clear()
    log = DecisionLog(tmp_path / "decisions.jsonl")
    with _engine(tmp_path, "current", DENYING) as current:
        (guarded,) = guard_tools([export_rows], current, decision_log=log, shadow={"new_rule"})
        out = guarded.invoke(
            {
                "type": "tool_call",
                "id": "c-1",
                "name": "export_rows",
                "args": {"query": "all", "limit": 5},
            },
            config=USER,
        )
        log.close()
        assert isinstance(out, ToolMessage)
        assert ran == [{"query": "all", "limit": 5}]  # shadowed: it ran, as documented
        (record,) = list(read_decision_log(tmp_path / "decisions.jsonl"))
        decision = record["decision"]
        assert decision["codes"] == ["new_rule"]
        assert decision["verdict"] != "allow" or decision.get("shadowed") is True, decision
        # The same policy replayed changes nothing.
        assert replay(tmp_path / "decisions.jsonl", current).ok, replay(
            tmp_path / "decisions.jsonl", current
        ).summary()
