"""A reload during a turn the embedded engine decides call by call: the whole turn is
decided on one policy.

The engine decides a turn call by call when its inputs differ in more than ``tool`` (or the
module has no batch entrypoint). A reload closes the old policy's instances; a call that
then found them closed used to go on with the new policy while the calls before it had been
decided by the old one, so one turn carried decisions of two policies (two revisions in the
decision log, and a turn-wide rule read two ways). Now the turn starts again on the new
policy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from langchain_opa_guard import EmbeddedPolicy

ALLOW = 'package agent.authz\n\ndecision := {"allow": true, "reasons": []}\n'
DENY = 'package agent.authz\n\ndecision := {"allow": false, "reasons": ["replaced"]}\n'


def turn() -> list[dict[str, Any]]:
    # Each input has its own user: not one shared part, so decided one call at a time.
    return [
        {"version": 1, "tool": {"name": "t", "args": {}, "call_id": f"c{i}"}, "user": {"id": i}}
        for i in range(3)
    ]


@pytest.mark.parametrize("side", ["sync", "async"])
def test_a_reload_between_two_calls_of_a_turn_redecides_the_turn(tmp_path: Path, side: str) -> None:
    (tmp_path / "policy.rego").write_text(ALLOW)
    engine = EmbeddedPolicy(tmp_path)
    first_revision = engine.revision
    decide_one = engine._decide
    seen: list[str | None] = []

    def reload_after_the_first_call(*args: Any) -> Any:
        decision = decide_one(*args)
        seen.append(decision.revision)
        if len(seen) == 1:  # a new policy lands while the turn is under way
            (tmp_path / "policy.rego").write_text(DENY)
            engine.reload()
        return decision

    engine._decide = reload_after_the_first_call  # type: ignore[method-assign]
    try:
        if side == "sync":
            decisions = engine.decide_many(turn())
        else:
            decisions = asyncio.run(engine.adecide_many(turn()))
    finally:
        engine.close()
    assert engine.revision != first_revision
    assert seen[0] == first_revision  # the first call was decided by the old policy ...
    # ... and the turn, decided again, is the new policy's alone.
    assert {d.revision for d in decisions} == {engine.revision}
    assert [d.verdict for d in decisions] == ["deny"] * 3
    assert all(d.error is None for d in decisions)
