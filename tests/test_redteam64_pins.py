"""Red team 64 pins: what was tried around reloads, the memory cap and forks, and held.

- A policy that builds a string past ``memory_limit`` fails closed (``engine_error``), alone,
  concurrently and inside a turn, and the next decisions run on fresh instances.
- A child forked while no reload runs reloads, and the parent keeps its policy.
- A reload that lands after the guard sealed its hand-over (the run paused before the tools
  node, as ``interrupt_before=["tools"]`` or a crash leaves it) voids the grant: the call is
  not run under the new deny (contrast ``test_redteam64_reload_after_decision.py``, where
  the reload lands between the decision and the seal).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import Ledger, Script, node_graph, thread_config

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call

ALLOW = 'package agent.authz\n\ndecision := {"allow": true, "reasons": ["allow %s"]}\n'
DENY = 'package agent.authz\n\ndecision := {"allow": false, "reasons": ["deny %s"]}\n'
USER = {"id": "u-1", "role": "tester"}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_a_reload_after_the_seal_voids_the_grant(tmp_path: Path, wiring: str, mode: str) -> None:
    tag = uuid.uuid4().hex
    (tmp_path / "policy.rego").write_text(ALLOW.replace("%s", tag))
    engine = EmbeddedPolicy(tmp_path, cache_dir=tmp_path / "cache")
    ledger = Ledger()
    turn = AIMessage("", tool_calls=[tool_call("read", {"item": "i"}, "r1")], id="a1")
    graph = node_graph(
        engine,
        Script([turn]),
        ledger,
        checkpointer=InMemorySaver(),
        interrupt_before=["tools"],
        wiring=wiring,
    )
    config = thread_config("t")

    def go(value: object) -> dict:
        if mode == "async":
            return asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
        return graph.invoke(value, config, context={"user": USER})

    try:
        go({"messages": [("user", "read i")]})
        assert graph.get_state(config).next == ("tools",)
        (tmp_path / "policy.rego").write_text(DENY.replace("%s", tag))
        engine.reload()
        out = go(None)
    finally:
        engine.close()
    assert ledger.runs == []
    answers = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in answers] == ["r1"]


def test_a_child_forked_with_no_reload_under_way_reloads(tmp_path: Path) -> None:
    """The control for ``test_redteam64_fork_during_reload.py``: forked while no reload runs,
    the child reloads (and decides on the new policy) within the same wait."""
    import threading

    from test_fork import in_child

    tag = uuid.uuid4().hex
    policy = tmp_path / "policy.rego"
    policy.write_text(ALLOW.replace("%s", tag))
    engine = EmbeddedPolicy(tmp_path, cache_dir=tmp_path / "cache", timeout=5.0)
    request = {"version": 1, "tool": {"name": "read", "args": {}, "call_id": "c1"}, "user": USER}
    try:
        assert engine.decide(request).allow

        def child() -> dict:
            policy.write_text(DENY.replace("%s", tag))
            done = threading.Event()
            threading.Thread(target=lambda: (engine.reload(), done.set()), daemon=True).start()
            finished = done.wait(4)
            return {"reloaded": finished, "after": engine.decide(request).verdict}

        got = in_child(child)
        # The parent is unaffected: still its own policy.
        assert engine.decide(request).allow
    finally:
        engine.close()
    assert got == {"reloaded": True, "after": "deny"}


BIG = """package agent.authz
import rego.v1
big(n) := concat("", [s | some i in numbers.range(1, n); s := concat("", ["x", "%s"])])
default decision := {"allow": false, "reasons": ["default"]}
decision := {"allow": true, "reasons": ["ok"]} if { input.tool.name == "read" }
decision := {"allow": count(big(input.tool.args.n)) > 0, "reasons": ["big"]} if {
    input.tool.name == "big"
}
"""


def test_a_policy_past_the_memory_cap_fails_closed_and_the_next_decision_is_fresh(
    tmp_path: Path,
) -> None:
    """A call whose argument makes the policy build a string past ``memory_limit``: denied
    (``engine_error``), concurrently too, and the calls after it are decided on fresh
    instances, in a turn with it as well."""
    (tmp_path / "policy.rego").write_text(BIG % uuid.uuid4().hex)
    engine = EmbeddedPolicy(
        tmp_path, cache_dir=tmp_path / "cache", max_instances=2, memory_limit=32 << 20
    )

    def req(name: str, call_id: str = "c", **args: object) -> dict:
        tool = {"name": name, "args": args, "call_id": call_id}
        return {"version": 1, "tool": tool, "user": USER}

    async def together() -> list:
        return await asyncio.gather(
            *[engine.adecide(req("big", n=2_000_000)) for _ in range(4)],
            engine.adecide(req("read")),
        )

    try:
        assert engine.decide(req("big", n=10)).allow
        huge = engine.decide(req("big", n=2_000_000))
        assert (huge.verdict, huge.error) == ("deny", "engine_error")
        assert engine.decide(req("read")).allow
        got = asyncio.run(together())
        assert [d.error for d in got[:4]] == ["engine_error"] * 4
        assert got[4].allow
        turn = engine.decide_many([req("read", "r"), req("big", "b", n=2_000_000)])
        assert not turn[1].allow and turn[1].error == "engine_error"
        assert engine.decide(req("read")).allow
    finally:
        engine.close()
