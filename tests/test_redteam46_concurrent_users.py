"""Red team 46: concurrent runs of different users and threads through one compiled graph and
one guard object (all pass here: pins).

The attack: many threads run at once through one compiled graph (and one guard, one engine),
every thread's model proposes the same turn id ``a1`` with the same call id ``p1`` to ``pay``;
the policy allows ``pay`` to the ``admin`` role only. Admin decisions are made slower than the
others (an engine that waits before it delegates), so a guest's decision comes back while an
admin's is still out and the two interleave. Sync ``batch`` (threads), ``abatch`` (one event
loop, user in ``configurable``) and ``asyncio.gather`` of ``ainvoke`` (user in the context), on
the guard node, the guard's edge, the ``ToolNode`` interceptor and the middleware, and
``guard_tools`` on its own.

Expected, and observed: every admin thread's call runs once with its own arguments, no guest
thread's call runs, each thread's call is answered once (a guest's with the policy's denial).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from mediation_kit import Ledger, Script, mediation_tools, thread_config, turn, wired_graph

from langchain_opa_guard import Decision, EmbeddedPolicy, PolicyEngine, guard_tools
from langchain_opa_guard.testing import tool_call

POLICY_TEXT = """package redteam46

default decision := {"allow": false, "reasons": [{"code": "default_deny", "message": "no rule"}]}

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "pay"
	input.user.role == "admin"
}

decision := {"allow": true, "reasons": []} if input.tool.name == "read"
"""

ADMIN = {"id": "u-admin", "role": "admin"}
GUEST = {"id": "u-guest", "role": "guest"}


def policy_dir(root: Path) -> Path:
    folder = root / "rt46"
    folder.mkdir(exist_ok=True)
    (folder / "rt46.rego").write_text(POLICY_TEXT)
    return folder


@pytest.fixture(scope="module")
def rt46_engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    return EmbeddedPolicy(policy_dir(tmp_path_factory.mktemp("rt46")), policy="redteam46/decision")


class AdminSlow:
    """``inner``, with every decision about an admin held ``delay`` seconds first."""

    def __init__(self, inner: PolicyEngine, delay: float = 0.05) -> None:
        self.inner = inner
        self.engine_name = inner.engine_name
        self.policy = inner.policy
        self.in_process = getattr(inner, "in_process", False)
        self.delay = delay

    def _slow(self, inputs: Sequence[Mapping[str, Any]]) -> bool:
        return any((i.get("user") or {}).get("role") == "admin" for i in inputs)

    def decide(self, input: Mapping[str, Any]) -> Decision:
        if self._slow([input]):
            time.sleep(self.delay)
        return self.inner.decide(input)

    async def adecide(self, input: Mapping[str, Any]) -> Decision:
        if self._slow([input]):
            await asyncio.sleep(self.delay)
        return await self.inner.adecide(input)

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        if self._slow(inputs):
            time.sleep(self.delay)
        return self.inner.decide_many(inputs)

    async def adecide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        if self._slow(inputs):
            await asyncio.sleep(self.delay)
        return await self.inner.adecide_many(inputs)


class PerThread(Script):
    """Every thread's model proposes turn ``a1``: ``pay`` (call ``p1``) of the amount its
    user message names; then says "ok"."""

    def __init__(self) -> None:
        super().__init__([])

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        if any(isinstance(m, AIMessage) for m in messages):
            return AIMessage("ok")
        amount = int(str(messages[0].content))
        return turn(tool_call("pay", {"amount": amount}, "p1"), id="a1")


WIRINGS = ("node", "edge", "interceptor", "middleware")
N = 8  # threads per run: even ones admin, odd ones guest


def plan(tag: str, same_args: bool) -> list[tuple[str, dict[str, Any], int]]:
    out = []
    for i in range(N):
        user = ADMIN if i % 2 == 0 else GUEST
        amount = 7 if same_args else (100 + i if user is ADMIN else 200 + i)
        out.append((f"rt46-{tag}-{i}", user, amount))
    return out


def check(graph: Any, ledger: Ledger, runs: list[tuple[str, dict[str, Any], int]]) -> None:
    admin_amounts = sorted(a for _, u, a in runs if u is ADMIN)
    ran = sorted(args["amount"] for name, _, args in ledger.runs if name == "pay")
    assert ran == admin_amounts, (ran, admin_amounts)
    for thread, user, _ in runs:
        msgs = graph.get_state(thread_config(thread)).values["messages"]
        answers = [m for m in msgs if isinstance(m, ToolMessage)]
        assert [m.tool_call_id for m in answers] == ["p1"], (thread, msgs)
        if user is ADMIN:
            assert answers[0].status != "error" and "pay ran" in str(answers[0].content), msgs
        else:
            assert answers[0].status == "error" and "pay ran" not in str(answers[0].content)


@pytest.mark.parametrize("same_args", [False, True])
@pytest.mark.parametrize("kind", WIRINGS)
def test_gathered_ainvokes_of_two_users_keep_their_own_decisions(
    rt46_engine: EmbeddedPolicy, kind: str, same_args: bool
) -> None:
    ledger = Ledger()
    graph = wired_graph(AdminSlow(rt46_engine), kind, mediation_tools(ledger), PerThread())
    runs = plan(f"gather-{kind}-{same_args}", same_args)

    async def main() -> None:
        await asyncio.gather(
            *(
                graph.ainvoke(
                    {"messages": [("user", str(amount))]},
                    thread_config(thread),
                    context={"user": user},
                )
                for thread, user, amount in runs
            )
        )

    asyncio.run(main())
    check(graph, ledger, runs)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", WIRINGS)
def test_batches_of_two_users_keep_their_own_decisions(
    rt46_engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    ledger = Ledger()
    graph = wired_graph(AdminSlow(rt46_engine), kind, mediation_tools(ledger), PerThread())
    runs = plan(f"batch-{kind}-{mode}", same_args=False)
    inputs = [{"messages": [("user", str(amount))]} for _, _, amount in runs]
    configs = [{"configurable": {"thread_id": t, "user": u}} for t, u, _ in runs]
    if mode == "async":
        asyncio.run(graph.abatch(inputs, configs))
    else:
        graph.batch(inputs, configs)
    check(graph, ledger, runs)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_guard_tools_called_at_once_by_two_users_keep_their_own_decisions(
    rt46_engine: EmbeddedPolicy, mode: str
) -> None:
    ledger = Ledger()
    pay = next(
        t for t in guard_tools(mediation_tools(ledger), AdminSlow(rt46_engine)) if t.name == "pay"
    )
    runs = plan(f"tools-{mode}", same_args=False)
    calls = [
        {"type": "tool_call", "name": "pay", "args": {"amount": a}, "id": "p1"} for _, _, a in runs
    ]
    configs = [{"configurable": {"thread_id": t, "user": u}} for t, u, _ in runs]
    if mode == "async":
        answers = asyncio.run(pay.abatch(calls, configs))
    else:
        answers = pay.batch(calls, configs)
    ran = sorted(args["amount"] for _, _, args in ledger.runs)
    assert ran == sorted(a for _, u, a in runs if u is ADMIN)
    for (_, user, _), answer in zip(runs, answers, strict=True):
        assert isinstance(answer, ToolMessage)
        assert ("pay ran" in str(answer.content)) == (user is ADMIN), answer
