"""Red team 64: a reload that lands between a turn's decision and the guard's seal makes the
old policy's allow run under the new policy's deny.

README ("Sealed hand-overs"): the guard's hand-over is bound, for ``EmbeddedPolicy``, to "the
policy revision (a grant made before a reload grants nothing after it)"; and ``reload()``
"decisions in flight finish on the policy they started with". So a turn decided under policy
A and handed to the tools after a reload to policy B must not run: its grant is A's.

What was done: ``EmbeddedPolicy`` loads ALLOW (every call allowed); a reload to DENY (every
call denied) lands right after the engine answered the turn (as a reload from another thread,
a file watcher or a rollout, lands while the guard is between the answer and its hand-over).
The engine is real; the only change is the moment of the reload.

Observed: the guard node (node and edge wirings, sync and async) and the middleware seal the
hand-over with the revision in force when they *seal* it (``engine_revision(self.engine)`` in
``PolicyGuardNode._binding`` / the middleware's ticket), not the revision that *decided* the
turn. The sealed grant names DENY's revision, the tools node finds it current, and the call
ALLOW decided runs after DENY is in force.

Expected: the grant carries the revision that decided the turn (``Decision.revision``), so
after the reload the call is answered unrun or decided again (denied); nothing runs.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import Ledger, Script, agent_graph, node_graph, thread_config

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call

ALLOW = 'package agent.authz\n\ndecision := {"allow": true, "reasons": ["allow %s"]}\n'
DENY = 'package agent.authz\n\ndecision := {"allow": false, "reasons": ["deny %s"]}\n'
USER = {"id": "u-1", "role": "tester"}


def reloading_engine(where: Path) -> EmbeddedPolicy:
    """An embedded engine on ALLOW that reloads to DENY right after its first answer."""
    tag = uuid.uuid4().hex  # a policy of its own: compiled here, not read from a cache
    (where / "policy.rego").write_text(ALLOW.replace("%s", tag))
    engine = EmbeddedPolicy(where, cache_dir=where / "cache")
    done: list[bool] = []

    def swap() -> None:
        if not done:
            done.append(True)
            (where / "policy.rego").write_text(DENY.replace("%s", tag))
            engine.reload()

    for name in ("decide", "decide_many"):
        original = getattr(engine, name)

        def sync(arg: Any, _original: Any = original) -> Any:
            result = _original(arg)
            swap()
            return result

        setattr(engine, name, sync)
    for name in ("adecide", "adecide_many"):
        original = getattr(engine, name)

        async def asynchronous(arg: Any, _original: Any = original) -> Any:
            result = await _original(arg)
            swap()
            return result

        setattr(engine, name, asynchronous)
    return engine


def one_call_turn() -> AIMessage:
    return AIMessage("", tool_calls=[tool_call("read", {"item": "i"}, "r1")], id="a1")


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("wiring", ["node", "edge", "middleware"])
def test_a_call_decided_before_a_reload_does_not_run_after_it(
    tmp_path: Path, wiring: str, mode: str
) -> None:
    engine = reloading_engine(tmp_path)
    ledger = Ledger()
    script = Script([one_call_turn()])
    saver = InMemorySaver()
    if wiring == "middleware":
        graph = agent_graph(engine, script, ledger, checkpointer=saver)
    else:
        graph = node_graph(engine, script, ledger, checkpointer=saver, wiring=wiring)
    config = thread_config("t")
    value = {"messages": [("user", "read i")]}
    try:
        if mode == "async":
            out = asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
        else:
            out = graph.invoke(value, config, context={"user": USER})
    finally:
        engine.close()
    answers = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in answers] == ["r1"]  # one answer
    # The reload to DENY is in force before the tool could start: nothing may run.
    assert ledger.runs == [], (
        f"ran under the new deny: {ledger.runs}; answer: {answers[0].content!r}"
    )
