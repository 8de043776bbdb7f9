"""Red team 65: cancellation, retries and durability (pins: nothing broke here; each test
asserts what was observed and expected).

What was done, on turn ``a1`` (``read`` r1 allowed, ``send`` s1 allowed, ``pay`` p1 denied, and
in the retry tests a second ``read`` r2):
- a ``RetryPolicy`` on the tools node (and, for the interceptor, on the ``ToolNode``) with a
  ``read`` that raises once, one and several calls per turn, with and without a checkpointer,
  sync and async (guard node, guard edge, interceptor);
- ``batch``/``abatch`` of several threads;
- a tool's own ``interrupt()`` under ``durability="exit"`` and ``"async"``, the resume cancelled
  at once, then two resumes at once, then a new message (all four wirings);
- ``interrupt_before=["tools"]`` under ``"exit"``/``"async"``, resumes cut by
  ``asyncio.wait_for`` at 0, 1 and 5 ms, then two resumes at once, then a new message;
- ``astream(stream_mode=["updates", "tasks", "messages"])`` consumers that stop after each of
  the first 8 items, then ``ainvoke(None)`` and a new message (all four wirings);
- an embedded Rego policy that loops until the deadline (``replace(s, "", x)``), sync, async
  cancelled by ``wait_for``, and batched with a call that does not loop, then the next
  decisions on a one-instance engine.
Observed and expected: the denied call never runs; the call that raised runs again and the
others do not; allowed calls start at most once; every call gets exactly one answer, none
with a traceback; the looping decisions fail closed (``timeout``) and the next ones are decided.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Annotated, Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import InjectedToolCallId, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command, RetryPolicy
from mediation_kit import (
    USER,
    Ledger,
    Script,
    answers_per_turn,
    confirming_read,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    thread_config,
    turn,
    wired_graph,
)

from langchain_opa_guard import GuardedToolNode, PolicyGuardNode, ToolCallGuard, answer_open_calls
from langchain_opa_guard.testing import tool_call


def flaky_tools(ledger, fails):
    left = dict(fails)

    def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an item."""
        ledger.record("read", tool_call_id, {"item": item})
        if left.get(tool_call_id, 0) > 0:
            left[tool_call_id] -= 1
            raise RuntimeError("flaky")
        return "read ran"

    return [
        StructuredTool.from_function(read),
        *(t for t in mediation_tools(ledger) if t.name != "read"),
    ]


def build(engine, kind, tools, script, saver, retry_on="tools"):
    builder = StateGraph(MessagesState)
    builder.add_node(
        "agent", RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}, name="agent")
    )
    builder.add_node(answer_open_calls)
    builder.add_edge(START, "answer_open_calls")
    builder.add_edge("answer_open_calls", "agent")
    rp = RetryPolicy(max_attempts=3, initial_interval=0.01, retry_on=Exception)
    if kind == "interceptor":
        guard = ToolCallGuard(engine, registry=tools)
        node = ToolNode(
            tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
        )
        builder.add_node("tools", node, retry_policy=rp)
        builder.add_conditional_edges("agent", tools_condition)
    else:
        guarded = GuardedToolNode(tools)
        pg = PolicyGuardNode(engine, registry=guarded)
        builder.add_node("guard", pg, retry_policy=rp if retry_on == "guard" else None)
        builder.add_node("tools", guarded, retry_policy=rp)
        if kind == "edge":
            builder.add_conditional_edges("agent", pg.edge("guard"), ["guard", "tools", END])
        else:
            builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=saver)


def check(msgs, ledger, ids):
    runs = Counter(i for _, i, _ in ledger.runs)
    assert runs["p1"] == 0, runs
    assert runs["s1"] <= 1, runs
    turns = answers_per_turn(msgs)
    for a in turns:
        assert set(a) == ids and all(n == 1 for n in a.values()), (a, msgs)
    for m in msgs:
        if isinstance(m, ToolMessage):
            assert "Traceback" not in str(m.content)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("saver", [True, False])
@pytest.mark.parametrize("kind", ["node", "edge", "interceptor"])
@pytest.mark.parametrize("calls", ["one", "several"])
def test_retry(engine, kind, saver, mode, calls):
    ledger = Ledger()
    if calls == "one":
        a1 = turn(tool_call("read", {"item": "i"}, "r1"))
        ids = {"r1"}
    else:
        a1 = turn(
            tool_call("read", {"item": "i"}, "r1"),
            tool_call("send", {"to": "b@ok.test", "body": "x"}, "s1"),
            tool_call("pay", {"amount": 5000}, "p1"),
            tool_call("read", {"item": "j"}, "r2"),
        )
        ids = {"r1", "s1", "p1", "r2"}
    tools = flaky_tools(ledger, {"r1": 1})
    g = build(engine, kind, tools, Script([a1, "ok"]), InMemorySaver() if saver else None)
    cfg = thread_config(f"rt65-retry-{kind}-{saver}-{mode}-{calls}") if saver else {}
    v = {"messages": [("user", "go")]}
    if mode == "async":
        out = asyncio.run(g.ainvoke(v, cfg, context={"user": USER}))
    else:
        out = g.invoke(v, cfg, context={"user": USER})
    check(out["messages"], ledger, ids)
    runs = Counter(i for _, i, _ in ledger.runs)
    assert runs["r1"] == 2 and runs["r2"] <= 1, runs
    r1 = next(m for m in out["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "r1")
    assert r1.content == "read ran", r1


def mixed():
    return turn(
        tool_call("read", {"item": "i"}, "r1"),
        tool_call("send", {"to": "b@ok.test", "body": "x"}, "s1"),
        tool_call("pay", {"amount": 5000}, "p1"),
    )


@pytest.mark.parametrize("durability", ["exit", "async"])
@pytest.mark.parametrize("kind", ["node", "edge", "interceptor", "middleware"])
def test_tool_interrupt_durability_cancelled_resume(engine, kind, durability):
    async def main():
        ledger = Ledger()
        tools = [confirming_read(ledger), *(t for t in mediation_tools(ledger) if t.name != "read")]
        g = wired_graph(engine, kind, tools, Script([mixed(), "ok", "ok", "ok"]), answer_open=True)
        cfg = thread_config(f"rt65-dur-{kind}-{durability}")
        kw = {"context": {"user": USER}, "durability": durability}
        out = await g.ainvoke({"messages": [("user", "go")]}, cfg, **kw)
        assert out.get("__interrupt__"), out
        (q,) = out["__interrupt__"]
        # resume, twice at once, plus one cancelled early
        t = asyncio.ensure_future(g.ainvoke(Command(resume={q.id: "yes"}), cfg, **kw))
        await asyncio.sleep(0)
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
        await asyncio.gather(
            g.ainvoke(Command(resume={q.id: "yes"}), cfg, **kw),
            g.ainvoke(Command(resume={q.id: "yes"}), cfg, **kw),
        )
        st = g.get_state(cfg)
        if st.interrupts:
            await g.ainvoke(Command(resume={i.id: "yes" for i in st.interrupts}), cfg, **kw)
        await g.ainvoke({"messages": [("user", "more")]}, cfg, **kw)
        runs = Counter(i for _, i, _ in ledger.runs)
        print(runs)
        assert runs["r1"] <= 1 and runs["s1"] <= 1
        check(g.get_state(cfg).values["messages"], ledger, {"r1", "s1", "p1"})

    asyncio.run(main())


@pytest.mark.parametrize("stop_at", range(1, 9))
@pytest.mark.parametrize("kind", ["node", "edge", "interceptor", "middleware"])
def test_astream_stopped_early(engine, kind, stop_at):
    async def main():
        ledger = Ledger()
        g = wired_graph(
            engine,
            kind,
            mediation_tools(ledger),
            Script([mixed(), "ok", "ok", "ok"]),
            answer_open=True,
        )
        cfg = thread_config(f"rt65-stream-{kind}-{stop_at}")
        kw = {"context": {"user": USER}}
        n = 0
        agen = g.astream(
            {"messages": [("user", "go")]}, cfg, stream_mode=["updates", "tasks", "messages"], **kw
        )
        async for _ in agen:
            n += 1
            if n >= stop_at:
                break
        await agen.aclose()
        await asyncio.sleep(0.05)
        await g.ainvoke(None, cfg, **kw)
        await g.ainvoke({"messages": [("user", "more")]}, cfg, **kw)
        runs = Counter(i for _, i, _ in ledger.runs)
        assert all(v <= 1 for v in runs.values()), runs
        check(g.get_state(cfg).values["messages"], ledger, {"r1", "s1", "p1"})

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["node", "edge", "interceptor", "middleware"])
def test_batch_several_threads(engine, kind, mode):
    ledger = Ledger()
    g = wired_graph(
        engine, kind, mediation_tools(ledger), Script([mixed(), "ok", "ok", "ok"]), answer_open=True
    )
    cfgs = [thread_config(f"rt65-batchN-{kind}-{mode}-{i}") for i in range(3)]
    v = {"messages": [("user", "go")]}
    kw = {"context": {"user": USER}}
    outs = (
        asyncio.run(g.abatch([v] * 3, cfgs, **kw))
        if mode == "async"
        else g.batch([v] * 3, cfgs, **kw)
    )
    runs = Counter(i for _, i, _ in ledger.runs)
    assert runs == Counter({"r1": 3, "s1": 3}), runs
    for o in outs:
        msgs = o["messages"]
        assert [Counter({"r1": 1, "s1": 1, "p1": 1})] == answers_per_turn(msgs)


@pytest.mark.parametrize("durability", ["exit", "async"])
@pytest.mark.parametrize("kind", ["node", "edge"])
def test_interrupt_before_tools_cancelled_resumes(engine, kind, durability):
    from mediation_kit import node_graph

    async def main():
        ledger = Ledger()
        g = node_graph(
            engine,
            Script([mixed(), "ok", "ok"]),
            ledger,
            checkpointer=InMemorySaver(),
            interrupt_before=["tools"],
            wiring=kind,
            answer_open=True,
        )
        cfg = thread_config(f"rt65-ib-{kind}-{durability}")
        kw = {"context": {"user": USER}, "durability": durability}
        await g.ainvoke({"messages": [("user", "go")]}, cfg, **kw)
        assert set(g.get_state(cfg).next) == {"tools"}
        for delay in (0, 0.001, 0.005):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(g.ainvoke(None, cfg, **kw), delay)
        await asyncio.gather(g.ainvoke(None, cfg, **kw), g.ainvoke(None, cfg, **kw))
        await g.ainvoke(None, cfg, **kw)
        await g.ainvoke({"messages": [("user", "more")]}, cfg, **kw)
        runs = Counter(i for _, i, _ in ledger.runs)
        print(runs)
        assert runs["r1"] <= 1 and runs["s1"] <= 1
        check(g.get_state(cfg).values["messages"], ledger, {"r1", "s1", "p1"})

    asyncio.run(main())


LOOP_REGO = """package loop

default decision := {"allow": false, "reasons": [{"code": "default_deny", "message": "no rule"}]}

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "read"
	not slow
}

slow if {
	startswith(input.tool.args.item, "loop")
	x := replace(input.tool.args.item, "", "x")
	x != ""
}
"""


def test_embedded_policy_looping_until_the_deadline_then_next_decisions(tmp_path: Any) -> None:
    import time

    from langchain_opa_guard import EmbeddedPolicy

    (tmp_path / "loop.rego").write_text(LOOP_REGO)
    eng = EmbeddedPolicy(
        tmp_path / "loop.rego", policy="loop/decision", timeout=0.3, max_instances=1
    )

    def inp(item: str) -> dict[str, Any]:
        return {"tool": {"name": "read", "args": {"item": item}}, "user": {"id": "u"}}

    try:
        looped = eng.decide(inp("loop"))
        assert not looped.allow and looped.error == "timeout"
        assert eng.decide(inp("i")).allow

        async def main() -> None:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(eng.adecide(inp("loopy")), 0.05)
            # the cancelled decision's guest call keeps the one instance until its deadline:
            # a decision asked at once waits for it and may run out of time (fail closed)
            at_once = await eng.adecide(inp("i"))
            assert at_once.allow or at_once.error == "timeout"
            await asyncio.sleep(0.35)
            started = time.monotonic()
            assert (await eng.adecide(inp("i"))).allow
            assert time.monotonic() - started < 0.3
            both = await eng.adecide_many([inp("loop"), inp("i")])
            assert [d.allow for d in both] == [False, False]
            assert all(d.error == "timeout" for d in both)
            after = await asyncio.gather(*[eng.adecide(inp("i")) for _ in range(4)])
            assert all(d.allow for d in after)

        asyncio.run(main())
    finally:
        eng.close()
