"""Red team 46: ``asyncio`` cancellation at each await of a guarded run, then the thread
continued (pins; see the module's tests for what each one found).

The attack: the model proposes turn ``a1``: an async ``read`` (``r1``, allowed), ``send`` to
``b@ok.test`` (``s1``, allowed) and ``pay`` of 5000 (``p1``, denied). The run (``ainvoke`` in a
task) is held at one await and cancelled there (``task.cancel()``, or ``asyncio.wait_for``
running out): while the engine decides, in an interceptor of the application's that sits
between the guard and the tool (the ``GuardedToolNode``'s ``awrap_tool_call``, an interceptor
outside ``ToolCallGuard``, a middleware after ``OPAGuardMiddleware``), and while the ``read``
tool itself awaits. The thread is then continued with ``ainvoke(None)`` and a new message, or
with a new message at once. Guard node, guard edge, ``ToolNode`` interceptor, middleware.

Expected, and observed: the denied ``p1`` never runs; ``r1`` and ``s1`` start at most once
each; at the end every call of ``a1`` has exactly one answer; nothing runs after the
continuation returned; no answer carries a traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool
from mediation_kit import (
    USER,
    Ledger,
    Script,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    thread_config,
    turn,
    wired_graph,
)

from langchain_opa_guard import (
    Decision,
    EmbeddedPolicy,
    PolicyEngine,
)
from langchain_opa_guard.testing import tool_call

KINDS = ("node", "edge", "interceptor", "middleware")


class Gate:
    """A point a run can be held at: while ``hold``, whoever reaches it counts itself in
    ``entered`` and waits (until cancelled)."""

    def __init__(self) -> None:
        self.hold = False
        self.entered = 0

    async def pass_(self) -> None:
        if self.hold:
            self.entered += 1
            await asyncio.sleep(30)


class GatedEngine:
    """``inner``, each async decision passing ``gate`` first."""

    def __init__(self, inner: PolicyEngine, gate: Gate) -> None:
        self.inner = inner
        self.engine_name = inner.engine_name
        self.policy = inner.policy
        self.in_process = getattr(inner, "in_process", False)
        self.gate = gate

    def decide(self, input: Mapping[str, Any]) -> Decision:
        return self.inner.decide(input)

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        return self.inner.decide_many(inputs)

    async def adecide(self, input: Mapping[str, Any]) -> Decision:
        await self.gate.pass_()
        return await self.inner.adecide(input)

    async def adecide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        await self.gate.pass_()
        return await self.inner.adecide_many(inputs)


def tools_with_async_read(ledger: Ledger, gate: Gate) -> list[BaseTool]:
    async def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an item."""
        ledger.record("read", tool_call_id, {"item": item})
        await gate.pass_()
        return "read ran"

    return [
        StructuredTool.from_function(coroutine=read, name="read", description="Read an item."),
        *(t for t in mediation_tools(ledger) if t.name != "read"),
    ]


def script() -> Script:
    a1 = turn(
        tool_call("read", {"item": "i"}, "r1"),
        tool_call("send", {"to": "b@ok.test", "body": "x"}, "s1"),
        tool_call("pay", {"amount": 5000}, "p1"),
    )
    return Script([a1, "ok", "ok", "ok"])


class Gates:
    def __init__(self) -> None:
        self.engine = Gate()
        self.between = Gate()
        self.tool = Gate()

    def all(self) -> list[Gate]:
        return [self.engine, self.between, self.tool]


def build(
    engine: EmbeddedPolicy, kind: str, ledger: Ledger, gates: Gates, model: Script | None = None
) -> Any:
    model = model or script()
    tools = tools_with_async_read(ledger, gates.tool)
    gated = GatedEngine(engine, gates.engine)

    async def between(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        await gates.between.pass_()
        return await handler(request)

    return wired_graph(gated, kind, tools, model, answer_open=True, between=between)


def check(graph: Any, ledger: Ledger, config: Any, where: str) -> None:
    before = list(ledger.runs)
    time.sleep(0.05)
    assert ledger.runs == before, f"{where}: a tool ran after the run returned {ledger.runs}"
    assert all(name != "pay" for name, _, _ in ledger.runs), (where, ledger.runs)
    for call in ("r1", "s1"):
        assert sum(1 for _, i, _ in ledger.runs if i == call) <= 1, (where, ledger.runs)
    state = graph.get_state(config)
    assert not state.next, (where, state.next)
    msgs = state.values["messages"]
    at = next(i for i, m in enumerate(msgs) if isinstance(m, AIMessage) and m.tool_calls)
    answers = [m for m in msgs[at + 1 :] if isinstance(m, ToolMessage)]
    assert sorted(m.tool_call_id for m in answers) == ["p1", "r1", "s1"], (where, msgs)
    for m in answers:
        assert "Traceback" not in str(m.content), (where, m)
        if "ran" in str(m.content) and "did not" not in str(m.content):
            assert any(i == m.tool_call_id for _, i, _ in ledger.runs), (where, m, ledger.runs)
    assert next(m for m in answers if m.tool_call_id == "p1").status == "error"


async def held_and_cancelled(graph: Any, config: Any, gate: Gate) -> bool:
    """Runs a1 until something waits at ``gate``, then cancels it; False if nothing did."""
    gate.hold = True
    run = graph.ainvoke({"messages": [("user", "go")]}, config, context={"user": USER})
    task = asyncio.ensure_future(run)
    for _ in range(400):
        if gate.entered or task.done():
            break
        await asyncio.sleep(0.005)
    if task.done():
        gate.hold = False
        return False
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.hold = False
    return True


@pytest.mark.parametrize("then", ["resume", "message"])
@pytest.mark.parametrize("at", ["engine", "between", "tool"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_run_cancelled_at_an_await_then_continued(
    engine: EmbeddedPolicy, kind: str, at: str, then: str
) -> None:
    async def main() -> None:
        ledger = Ledger()
        gates = Gates()
        graph = build(engine, kind, ledger, gates)
        config = thread_config(f"rt46-cancel-{kind}-{at}-{then}")
        gate = getattr(gates, at)
        held = await held_and_cancelled(graph, config, gate)
        assert held, f"nothing reached the {at} gate"
        ctx = {"user": USER}
        if then == "resume":
            await asyncio.wait_for(graph.ainvoke(None, config, context=ctx), 10)
        await asyncio.wait_for(
            graph.ainvoke({"messages": [("user", "more")]}, config, context=ctx), 10
        )
        check(graph, ledger, config, f"{kind} {at} {then}")

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_wait_for_expiring_around_ainvoke_while_the_tool_runs(
    engine: EmbeddedPolicy, kind: str
) -> None:
    async def main() -> None:
        ledger = Ledger()
        gates = Gates()
        graph = build(engine, kind, ledger, gates)
        config = thread_config(f"rt46-waitfor-{kind}")
        gates.tool.hold = True
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                graph.ainvoke({"messages": [("user", "go")]}, config, context={"user": USER}), 0.5
            )
        assert time.monotonic() - started < 2
        assert gates.tool.entered == 1
        gates.tool.hold = False
        ctx = {"user": USER}
        await asyncio.wait_for(graph.ainvoke(None, config, context=ctx), 10)
        await asyncio.wait_for(
            graph.ainvoke({"messages": [("user", "more")]}, config, context=ctx), 10
        )
        check(graph, ledger, config, f"wait_for {kind}")
        # the cancelled read did not start again
        assert [i for _, i, _ in ledger.runs].count("r1") == 1

    asyncio.run(main())


# -- a question waiting for a reviewer ------------------------------------------------------


def asking() -> Script:
    """Turn ``a1``: ``send`` to ``a@ask.test`` (``s1``: the policy asks a human) beside the async
    ``read`` (``r1``: allowed)."""
    a1 = turn(
        tool_call("send", {"to": "a@ask.test", "body": "x"}, "s1"),
        tool_call("read", {"item": "i"}, "r1"),
    )
    return Script([a1, "ok", "ok", "ok"])


@pytest.mark.parametrize("then", ["none", "again"])
@pytest.mark.parametrize("at", ["engine", "between", "tool"])
@pytest.mark.parametrize("kind", ["node", "edge", "middleware"])
def test_a_resumed_approval_cancelled_at_an_await_then_resumed(
    engine: EmbeddedPolicy, kind: str, at: str, then: str
) -> None:
    """The reviewer's approval is sent (``ainvoke(Command(resume=...))``) and that run is
    cancelled while the turn is decided again, between the guard and a tool, or while the
    approved turn's ``read`` runs; the thread is then continued with ``ainvoke(None)`` or the
    same answer sent again, and a new message. Expected and observed: ``s1`` and ``r1`` start
    at most once each, each is answered once, nothing runs after the run returned."""
    from langgraph.types import Command

    async def main() -> None:
        ledger = Ledger()
        gates = Gates()
        graph = build(engine, kind, ledger, gates, asking())
        config = thread_config(f"rt46-approval-{kind}-{at}-{then}")
        ctx = {"user": USER}
        out = await graph.ainvoke({"messages": [("user", "go")]}, config, context=ctx)
        (question,) = out["__interrupt__"]
        answer = Command(resume={question.id: {"decisions": [{"type": "approve"}]}})
        gate = getattr(gates, at)
        gate.hold = True
        task = asyncio.ensure_future(graph.ainvoke(answer, config, context=ctx))
        for _ in range(400):
            if gate.entered or task.done():
                break
            await asyncio.sleep(0.005)
        assert not task.done(), f"nothing reached the {at} gate: {task.result()}"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.hold = False
        await asyncio.wait_for(
            graph.ainvoke(None if then == "none" else answer, config, context=ctx), 10
        )
        for _ in range(3):  # answer any question asked again
            state = graph.get_state(config)
            if not state.interrupts:
                break
            again = {i.id: {"decisions": [{"type": "approve"}]} for i in state.interrupts}
            await asyncio.wait_for(graph.ainvoke(Command(resume=again), config, context=ctx), 10)
        await asyncio.wait_for(
            graph.ainvoke({"messages": [("user", "more")]}, config, context=ctx), 10
        )
        before = list(ledger.runs)
        await asyncio.sleep(0.05)
        assert ledger.runs == before
        for call in ("r1", "s1"):
            assert sum(1 for _, i, _ in ledger.runs if i == call) <= 1, ledger.runs
        state = graph.get_state(config)
        assert not state.next and not state.interrupts
        msgs = state.values["messages"]
        at_ = next(i for i, m in enumerate(msgs) if isinstance(m, AIMessage) and m.tool_calls)
        answers = [m for m in msgs[at_ + 1 :] if isinstance(m, ToolMessage)]
        assert sorted(m.tool_call_id for m in answers) == ["r1", "s1"], msgs
        for m in answers:
            assert "Traceback" not in str(m.content), m
            if "ran" in str(m.content) and "did not" not in str(m.content):
                assert any(i == m.tool_call_id for _, i, _ in ledger.runs), (m, ledger.runs)

    asyncio.run(main())
