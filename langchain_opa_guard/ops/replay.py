"""Replaying recorded decisions against a candidate policy: a regression kit for policies.

Record decisions in production or staging with a :class:`~langchain_opa_guard.DecisionLog`,
then ask what a new policy would decide on the same inputs before rolling it out::

    python -m langchain_opa_guard replay decisions.jsonl --policy policies/
    python -m langchain_opa_guard replay decisions.jsonl --opa-url http://localhost:8181

or gate a policy change in CI::

    from langchain_opa_guard.ops.replay import assert_no_decision_changes

    def test_new_policy_changes_nothing():
        assert_no_decision_changes("tests/decisions.jsonl", EmbeddedPolicy("policies"))
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_opa_guard.decision import Decision
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.ops.decision_log import decision_dict, read_decision_log

__all__ = ["ChangedDecision", "ReplayReport", "assert_no_decision_changes", "replay"]


@dataclass(frozen=True)
class ChangedDecision:
    """A recorded decision that the candidate policy decides differently."""

    line: int
    tool: str | None
    call_id: str | None
    before: Mapping[str, Any]
    after: Decision

    def describe(self) -> str:
        was = self.before.get("verdict")
        codes_before = ",".join(self.before.get("codes") or []) or "-"
        codes_after = ",".join(self.after.codes) or "-"
        return (
            f"line {self.line}: {self.tool} ({self.call_id}): {was} -> {self.after.verdict}"
            f"  [codes {codes_before} -> {codes_after}]"
        )


@dataclass
class ReplayReport:
    """What a replay found."""

    total: int = 0
    changed: list[ChangedDecision] = field(default_factory=list)
    errors: list[ChangedDecision] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.changed and not self.errors

    def summary(self) -> str:
        lines = [
            f"{self.total} decisions replayed: {len(self.changed)} would change, "
            f"{len(self.errors)} could not be evaluated"
        ]
        lines += [f"  changed  {c.describe()}" for c in self.changed]
        lines += [f"  error    {e.describe()}: {'; '.join(e.after.reasons)}" for e in self.errors]
        return "\n".join(lines)


def replay(
    records: str | Path | Iterable[Mapping[str, Any]],
    engine: PolicyEngine,
    *,
    strict: bool = False,
) -> ReplayReport:
    """Decide each recorded input with ``engine`` and report the decisions that change.

    A decision changes when its verdict (allow, deny, approval; for a deny shadow mode let
    run, the policy's) or the arguments a rewrite runs the call with differ; with ``strict``
    also when its reason codes differ. Records whose original decision was an engine
    failure are replayed too: they show what the policy would have said.
    """
    items = read_decision_log(records) if isinstance(records, (str, Path)) else records
    report = ReplayReport()
    for line, record in enumerate(items, 1):
        document = record.get("input")
        before = record.get("decision") or {}
        if not isinstance(document, Mapping):
            continue
        report.total += 1
        after = engine.decide(document)
        change = ChangedDecision(line, record.get("tool"), record.get("call_id"), before, after)
        if after.error is not None:
            report.errors.append(change)
        elif (
            after.verdict != before.get("would", before.get("verdict"))
            or _plain(after.args) != _plain(before.get("args"))
            or (strict and list(after.codes) != list(before.get("codes") or []))
        ):
            report.changed.append(change)
    return report


def _plain(args: Any) -> str:
    """Rewritten arguments as canonical text (``None``: no rewrite)."""
    return json.dumps(args, sort_keys=True, default=str)


def assert_no_decision_changes(
    records: str | Path | Iterable[Mapping[str, Any]],
    engine: PolicyEngine,
    *,
    strict: bool = False,
) -> ReplayReport:
    """A pytest helper: fail with the replay's summary if any recorded decision changes."""
    report = replay(records, engine, strict=strict)
    if not report.ok:
        raise AssertionError(report.summary())
    return report


def as_record(document: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """A decision-log record built in memory (for tests and tools)."""
    tool = document.get("tool") if isinstance(document.get("tool"), Mapping) else {}
    return {
        "tool": tool.get("name") if isinstance(tool, Mapping) else None,
        "call_id": tool.get("call_id") if isinstance(tool, Mapping) else None,
        "input": dict(document),
        "decision": decision_dict(decision),
    }
