"""Red team 65: ``batch``/``abatch`` of one thread twice (finding).

What was done: the model (a script) proposes turn ``a1``: ``read`` (``r1``, allowed), ``send``
to ``b@ok.test`` (``s1``, allowed) and ``pay`` of 5000 (``p1``, denied). The same input is
sent twice to the same thread in one call, ``graph.batch([v, v], [config, config])`` (or
``abatch``): two runs of one thread at once in one process (a double-submitted message). Both
runs read the same checkpoint, the model gives both the same message ``a1`` with the same call
ids, and each run's guard decides it. Guard node, guard edge, ``ToolCallGuard`` interceptor,
``create_agent`` middleware; sync and async.

Observed: ``r1`` and ``s1`` run twice (the mail is sent twice) on every wiring: the claims name
a turn by its deciding task, and each run has its own, so the second run's grants for the very
same calls of the very same model message are fresh. ``p1`` never runs, and each run's
answers are one per call.

Expected ("Nothing runs twice": a call of a decided turn that already started in this process
does not start again, "two resumes sent at once, a double click ... it runs for one of them";
the README leaves out only runs of one thread in *several processes* at once): each call of
``a1`` starts once in this process; the other run answers it without running it.
(With a real model the two runs would propose different message and call ids, two turns the
guard cannot tell apart from deliberate ones; here they are the same turn, same ids.)

Known and documented (README, "Nothing runs twice": runs of one thread at once are two forks;
serialize them): strict expected failures, to be turned on the day it is fixed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from mediation_kit import (
    USER,
    Ledger,
    Script,
    answers_per_turn,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    thread_config,
    turn,
    wired_graph,
)

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call

pytestmark = pytest.mark.xfail(
    strict=True, reason="two runs of one thread at once decide the turn twice (README)"
)


def mixed() -> AIMessage:
    return turn(
        tool_call("read", {"item": "i"}, "r1"),
        tool_call("send", {"to": "b@ok.test", "body": "x"}, "s1"),
        tool_call("pay", {"amount": 5000}, "p1"),
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["node", "edge", "interceptor", "middleware"])
def test_one_thread_batched_twice_runs_each_call_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    ledger = Ledger()
    graph = wired_graph(
        engine, kind, mediation_tools(ledger), Script([mixed(), "ok", "ok", "ok"]), answer_open=True
    )
    config = thread_config(f"rt65-batch-one-thread-{kind}-{mode}")
    value: Any = {"messages": [("user", "go")]}
    kw: Any = {"context": {"user": USER}}
    if mode == "async":
        outs = asyncio.run(graph.abatch([value, value], [config, config], **kw))
    else:
        outs = graph.batch([value, value], [config, config], **kw)
    for out in outs:
        assert answers_per_turn(out["messages"]) == [Counter({"r1": 1, "s1": 1, "p1": 1})]
    runs = Counter(call_id for _, call_id, _ in ledger.runs)
    assert runs["p1"] == 0, runs
    assert runs["r1"] == 1 and runs["s1"] == 1, f"{kind} {mode}: ran {dict(runs)}"
