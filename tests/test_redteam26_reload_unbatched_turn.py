"""Red team 26: a reload mid-turn still splits a turn when the embedded policy has no batch
entrypoint.

Commit b323463 made ``EmbeddedPolicy.decide_many`` decide a whole turn again when a reload
lands during it. But the guard only calls ``decide_many`` when ``engine.batches`` is true
(``deciding.decide_calls``/``adecide_calls``). With the regopy backend (``batch=None``), or a
wasm bundle built with only the decision entrypoint (``opa build -t wasm -e
agent/authz/decision``, the documented way to ship one), ``batches`` is false and every call
of the turn goes through ``engine.decide`` on whatever policy is loaded at that moment: the
fix never runs.

The attack: policy v1 allows ``read`` and denies ``send``; v2 (a reload, e.g. a rollout)
denies ``read`` and allows ``send``. Neither policy lets both calls of the turn
``[read, send]`` run. A reload landing after the first call is decided makes the turn
``read`` allowed by v1 + ``send`` allowed by v2: both run.

Expected: the turn is decided by one policy (as ``decide_many`` now guarantees), so at most
one of the two runs, and every decision of the turn carries one revision.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from opa_process import opa_binary

from langchain_opa_guard import EmbeddedPolicy, OPAGuardMiddleware
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

V1 = 'package agent.authz\n\ndecision := {"allow": input.tool.name == "read", "reasons": ["v1"]}\n'
V2 = 'package agent.authz\n\ndecision := {"allow": input.tool.name == "send", "reasons": ["v2"]}\n'


def wasm_bundle(where: Path, rego: str) -> Path:
    """A wasm bundle as a user builds one: only the decision entrypoint."""
    src = where / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    (src / "policy.rego").write_text(rego)
    out = where / "bundle.tar.gz"
    subprocess.run(
        [
            opa_binary(),
            "build",
            "-t",
            "wasm",
            "-e",
            "agent/authz/decision",
            "-o",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return out


def make_engine(kind: str, tmp_path: Path) -> tuple[EmbeddedPolicy, Any]:
    """The engine on v1, and a function that switches its source to v2 and reloads."""
    if kind == "regopy":
        (tmp_path / "policy.rego").write_text(V1)
        engine = EmbeddedPolicy(tmp_path, backend="regopy")

        def switch() -> None:
            (tmp_path / "policy.rego").write_text(V2)
            engine.reload()

        return engine, switch
    built = tmp_path / "build"
    built.mkdir()
    target = tmp_path / "policy.tar.gz"
    shutil.copy(wasm_bundle(built, V1), target)
    engine = EmbeddedPolicy(target)

    def switch_bundle() -> None:
        shutil.copy(wasm_bundle(built, V2), target)
        engine.reload()

    return engine, switch_bundle


def reload_after_first_evaluation(engine: EmbeddedPolicy, switch: Any) -> None:
    """A reload (another thread, a file watcher) lands right after the turn's first call
    has been evaluated."""
    evaluate = engine._evaluate
    count = [0]

    def evaluating(*args: Any, **kwargs: Any) -> Any:
        result = evaluate(*args, **kwargs)
        count[0] += 1
        if count[0] == 1:
            switch()
        return result

    engine._evaluate = evaluating  # type: ignore[method-assign]


@pytest.mark.parametrize("side", ["sync", "async"])
@pytest.mark.parametrize("kind", ["regopy", "wasm_bundle"])
def test_a_reload_mid_turn_does_not_let_two_policies_each_allow_half(
    tmp_path: Path, kind: str, side: str
) -> None:
    engine, switch = make_engine(kind, tmp_path)
    assert not engine.batches  # the guard decides this turn call by call
    reload_after_first_evaluation(engine, switch)
    ran: list[str] = []

    @tool
    def read(item: str) -> str:
        """Read an item."""
        ran.append("read")
        return "secret"

    @tool
    def send(to: str) -> str:
        """Send something."""
        ran.append("send")
        return "sent"

    model = ScriptedChatModel(
        script=[
            AIMessage(
                "",
                tool_calls=[
                    tool_call("read", {"item": "x"}, "r1"),
                    tool_call("send", {"to": "eve@evil.test"}, "s1"),
                ],
            ),
            "done",
        ]
    )
    agent = create_agent(model, [read, send], middleware=[OPAGuardMiddleware(engine)])
    state = {"messages": [("user", "go")]}
    try:
        result = agent.invoke(state) if side == "sync" else asyncio.run(agent.ainvoke(state))
    finally:
        engine.close()
    answers = {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}
    # Observed: read allowed by v1, send allowed by v2, both run.
    assert sorted(ran) != ["read", "send"], (
        f"both calls ran, each allowed by a different policy: {ran}; "
        f"answers: { {k: str(v.content)[:60] for k, v in answers.items()} }"
    )
