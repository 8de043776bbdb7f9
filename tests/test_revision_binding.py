"""A hand-over is bound to the policy revision its calls were decided under, not the one in
force when it is written: a reload between the decision and the hand-over voids it.

Red team 64 found the first case (``tests/test_redteam64_reload_after_decision.py``: a turn
decided, then a reload, then the hand-over). These tests add the decision made again on
resume, after a reviewer approved a call, and the rule that names one revision for a turn.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.types import Command
from mediation_kit import APPROVE, Ledger, approval_graph, run, thread_config

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.guards.seals import SEVERAL_REVISIONS, decided_revision
from langchain_opa_guard.testing import tool_call

ASK = (
    "package agent.authz\n\n"
    'decision := {"allow": false, "require_approval": true, "reasons": ["ask %s"]}\n'
)
DENY = 'package agent.authz\n\ndecision := {"allow": false, "reasons": ["deny %s"]}\n'


def test_a_turn_names_one_revision_or_none_that_holds() -> None:
    assert decided_revision(["r1", None, "r1"]) == "r1"
    assert decided_revision([None, ""]) is None
    assert decided_revision([]) is None
    assert decided_revision(["r1", "r2"]) == SEVERAL_REVISIONS
    assert decided_revision([SEVERAL_REVISIONS, "r1"]) == SEVERAL_REVISIONS


class Reloading:
    """An embedded engine on ASK that, once armed, reloads to DENY right after its next
    answer (a reload from another thread landing between a decision and its hand-over)."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.tag = uuid.uuid4().hex  # a policy of its own: compiled here, not from a cache
        (where / "policy.rego").write_text(ASK.replace("%s", self.tag))
        self.engine = EmbeddedPolicy(where, cache_dir=where / "cache")
        self.armed = False
        for name in ("decide", "decide_many"):
            original = getattr(self.engine, name)

            def answer(arg: Any, _original: Any = original) -> Any:
                result = _original(arg)
                self._swap()
                return result

            setattr(self.engine, name, answer)

    def _swap(self) -> None:
        if self.armed:
            self.armed = False
            (self.where / "policy.rego").write_text(DENY.replace("%s", self.tag))
            self.engine.reload()


@pytest.mark.parametrize("reload", [False, True], ids=["no-reload", "reload"])
@pytest.mark.parametrize("kind", ["node", "edge", "middleware"])
def test_a_call_approved_and_decided_again_before_a_reload_does_not_run_after_it(
    tmp_path: Path, kind: str, reload: bool
) -> None:
    """The reviewer approves; on resume the call is decided again (ASK: may run once
    approved); a reload to DENY lands right after that decision: the call does not run.
    Without the reload it runs once."""
    policy = Reloading(tmp_path)
    ledger = Ledger()
    turn = AIMessage("", tool_calls=[tool_call("read", {"item": "i"}, "r1")], id="a1")
    graph = approval_graph(kind, policy.engine, [turn, "ok", "ok"], ledger)
    config = thread_config(f"revision-{kind}-{reload}")
    try:
        out = run(graph, {"messages": [("user", "read i")]}, config, "sync")
        (question,) = out["__interrupt__"]
        policy.armed = reload
        out = run(graph, Command(resume={question.id: APPROVE}), config, "sync")
    finally:
        policy.engine.close()
    answers = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in answers] == ["r1"]  # one answer either way
    assert ledger.runs == ([] if reload else [("read", "r1", {"item": "i"})]), answers
