"""Benchmark 1: what the guard adds to a ReAct round.

One round: user message -> the scripted model proposes N parallel tool calls -> tools ->
the model answers. The guarded graph is the demo's ``build_agent`` (``agent -> guard ->
tools``) on the embedded engine and on a real OPA sidecar over loopback; the unguarded one
the classic ReAct round (``agent -> ToolNode`` through ``tools_condition``, the calls of a
turn in one task). All calls are allowed (an admin reading a name), so every graph does the
same tool work. ``graph.invoke``, sides interleaved round by round; wall time and this
process's CPU time (all threads) per run.

Without a checkpointer the guard sends a turn's allowed calls to the tools node in one task,
as a ``ToolNode`` runs them. With one (an ``InMemorySaver``, a fresh thread per run, on both
sides) it sends each call in a task of its own, so that a task LangGraph runs again runs only
its own call; that part also measures an unguarded graph that runs a task per call (a
``Send`` per call, as LangChain's ``create_agent`` does), to tell LangGraph's per-task work
from the guard's.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from common import POLICIES, ms, start_opa
from harness import (
    ADMIN,
    INPUTS,
    NotedTable,
    admin_model,
    check_answered,
    median,
    ratio,
    task_per_call_agent,
    timed_rounds,
    unguarded_agent,
)
from langgraph.checkpoint.memory import InMemorySaver

from langchain_opa_guard import EmbeddedPolicy, OPAServer
from langchain_opa_guard.demo import build_agent, customer_db_tools

COUNTS = (1, 3, 8)
ROUNDS = 30
INNER = 5


def run() -> list[NotedTable]:
    opa = start_opa()
    embedded = EmbeddedPolicy(POLICIES)
    server = OPAServer(opa.url)
    batched = OPAServer(opa.url, batch=True)
    try:
        table = NotedTable(
            "Guard overhead per ReAct round, no checkpointer (graph.invoke; wall time, "
            f"medians of {ROUNDS} interleaved rounds x {INNER} runs)",
            [
                "calls",
                "unguarded (ToolNode)",
                "no-op node / unguarded",
                "embedded guard",
                "embedded / unguarded",
                "embedded, guard as edge",
                "edge / unguarded",
                "OPA sidecar",
                "OPA sidecar / unguarded",
                "OPA sidecar, batch",
                "batch / unguarded",
                "OPA sidecar, batch, as edge",
                "batch edge / unguarded",
            ],
        )
        saved = NotedTable(
            "The same rounds with a checkpointer (InMemorySaver, a fresh thread per run, "
            "both sides; wall time, medians)",
            [
                "calls",
                "unguarded (ToolNode)",
                "a task per call, no guard",
                "task per call / unguarded",
                "embedded guard",
                "embedded / unguarded",
                "embedded / task per call",
            ],
        )
        cpu_table = NotedTable(
            "The same rounds in CPU time (this process, all threads; medians per run)",
            [
                "calls",
                "unguarded",
                "embedded guard",
                "embedded / unguarded",
                "with a checkpointer: unguarded",
                "embedded guard",
                "embedded / unguarded",
            ],
        )
        at_three: dict[str, float] = {}
        for n in COUNTS:
            tools, _db = customer_db_tools()
            graphs = {
                "unguarded": unguarded_agent(admin_model(n), tools),
                "noop": unguarded_agent(admin_model(n), tools, noop_node=True),
                "embedded": build_agent(embedded, admin_model(n), tools),
                "embedded_edge": build_agent(embedded, admin_model(n), tools, edge=True),
                "opa": build_agent(server, admin_model(n), tools),
                "batch": build_agent(batched, admin_model(n), tools),
                "batch_edge": build_agent(batched, admin_model(n), tools, edge=True),
                "saved_unguarded": unguarded_agent(
                    admin_model(n), tools, checkpointer=InMemorySaver()
                ),
                "saved_task_per_call": task_per_call_agent(
                    admin_model(n), tools, checkpointer=InMemorySaver()
                ),
                "saved_embedded": build_agent(
                    embedded, admin_model(n), tools, checkpointer=InMemorySaver()
                ),
            }

            def side(name: str, graph: Any) -> Any:
                saved_side = name.startswith("saved_")

                def block() -> int:
                    for _ in range(INNER):
                        config = (
                            {"configurable": {"thread_id": uuid.uuid4().hex}}
                            if saved_side
                            else None
                        )
                        graph.invoke(INPUTS, config, context={"user": ADMIN})
                    return INNER

                return block

            for name, graph in graphs.items():
                config = (
                    {"configurable": {"thread_id": uuid.uuid4().hex}}
                    if name.startswith("saved_")
                    else None
                )
                check_answered(graph.invoke(INPUTS, config, context={"user": ADMIN}), n)
            cpu: dict[str, list[float]] = {}
            samples = timed_rounds(
                {name: side(name, g) for name, g in graphs.items()},
                rounds=ROUNDS,
                warmup=3,
                cpu=cpu,
            )
            wall = {name: median(values) for name, values in samples.items()}
            used = {name: median(values) for name, values in cpu.items()}
            base = wall["unguarded"]
            table.add(
                n,
                ms(base),
                ratio(wall["noop"], base),
                ms(wall["embedded"]),
                ratio(wall["embedded"], base),
                ms(wall["embedded_edge"]),
                ratio(wall["embedded_edge"], base),
                ms(wall["opa"]),
                ratio(wall["opa"], base),
                ms(wall["batch"]),
                ratio(wall["batch"], base),
                ms(wall["batch_edge"]),
                ratio(wall["batch_edge"], base),
            )
            saved_base, per_call = wall["saved_unguarded"], wall["saved_task_per_call"]
            saved.add(
                n,
                ms(saved_base),
                ms(per_call),
                ratio(per_call, saved_base),
                ms(wall["saved_embedded"]),
                ratio(wall["saved_embedded"], saved_base),
                ratio(wall["saved_embedded"], per_call),
            )
            cpu_table.add(
                n,
                ms(used["unguarded"]),
                ms(used["embedded"]),
                ratio(used["embedded"], used["unguarded"]),
                ms(used["saved_unguarded"]),
                ms(used["saved_embedded"]),
                ratio(used["saved_embedded"], used["saved_unguarded"]),
            )
            if n == 3:
                at_three = {k: v / base for k, v in wall.items()}
                at_three["cpu_embedded"] = used["embedded"] / used["unguarded"]
                at_three["cpu_embedded_edge"] = used["embedded_edge"] / used["unguarded"]
                at_three["saved_embedded"] = wall["saved_embedded"] / saved_base
                at_three["saved_tasks"] = per_call / saved_base
                at_three["saved_vs_tasks"] = wall["saved_embedded"] / per_call
        if at_three:
            for key, label, goal in (
                ("embedded", "embedded", 1.15),
                ("embedded_edge", "embedded, the guard as the agent's edge", 1.15),
                ("opa", "OPA sidecar", 1.30),
                ("batch", "OPA sidecar with batch=True", 1.30),
                ("batch_edge", "OPA sidecar with batch=True, the guard as the edge", 1.30),
            ):
                got = at_three[key]
                verdict = "met" if got <= goal else "NOT met"
                table.note(
                    f"goal for 3 calls, {label} <= {goal:.2f}x the unguarded ToolNode round: "
                    f"{got:.2f}x ({verdict}; CPU {at_three['cpu_' + key]:.2f}x)"
                    if key in ("embedded", "embedded_edge")
                    else f"goal for 3 calls, {label} <= {goal:.2f}x the unguarded ToolNode "
                    f"round: {got:.2f}x ({verdict})"
                )
            saved.note(
                "with a checkpointer, 3 calls: the embedded guard "
                f"{at_three['saved_embedded']:.2f}x the unguarded ToolNode round; one task "
                f"per call alone costs {at_three['saved_tasks']:.2f}x (LangGraph's per-task "
                "work: a thread, a config, callbacks, checkpoint writes for each task), the "
                f"guard itself {at_three['saved_vs_tasks']:.2f}x of that graph"
            )
        table.note(
            "no-op node: a node that returns nothing where the guard would be (agent -> noop "
            "-> tools), i.e. what one more LangGraph step costs before the guard does any work"
        )
        table.note(
            "guard as edge: PolicyGuardNode.edge in place of tools_condition (agent -> tools "
            "when every call is allowed, as in these rounds; the guard node only for denials, "
            "approvals and rewrites): the same decisions without the extra step"
        )
        table.note(
            "without a checkpointer the guard sends a turn's allowed calls in one task, as a "
            "ToolNode runs them; the guard decides the calls of a turn in one guest call on "
            "the embedded engine, concurrently over OPA (a thread pool on the sync path), in "
            f"one request with batch=True; OPA runs on the same {os.cpu_count()} cores"
        )
        saved.note(
            "with a checkpointer the guard sends each allowed call in a task of its own, so "
            "a task LangGraph runs again (a retry, a resume after a tool's interrupt(), a run "
            "resumed in another process) runs only its own call"
        )
        return [table, saved, cpu_table, engine_in_round()]
    finally:
        server.close()
        batched.close()
        embedded.close()
        opa.stop()


SHARE_RUNS = 200


def engine_in_round() -> NotedTable:
    """The embedded engine's time per decision inside the guarded round (the guard as the
    edge) against the same documents decided back to back, in one process.

    A probe engine of its own records the time of each ``decide``/``decide_many`` the guard
    makes during ``graph.invoke``; the same documents are then decided again in a tight loop.
    """
    table = NotedTable(
        "The embedded engine's decision inside a round and back to back (the guard as the "
        f"edge; medians of {SHARE_RUNS} rounds / {SHARE_RUNS} decisions)",
        [
            "calls",
            "round, wall",
            "engine inside the round",
            "share of the round",
            "the same documents back to back",
            "inside / back to back",
        ],
    )
    probe = EmbeddedPolicy(POLICIES)
    inside: list[float] = []
    documents: list[Any] = []

    def timed(method: Any, many: bool) -> Any:
        def call(arg: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(arg)
            finally:
                inside.append(time.perf_counter() - started)
                documents[:] = [("many" if many else "one", arg)]

        return call

    probe.decide = timed(probe.decide, False)  # type: ignore[method-assign]
    probe.decide_many = timed(probe.decide_many, True)  # type: ignore[method-assign]
    try:
        for n in COUNTS:
            tools, _db = customer_db_tools()
            graph = build_agent(probe, admin_model(n), tools, edge=True)
            for _ in range(20):
                graph.invoke(INPUTS, None, context={"user": ADMIN})
            inside.clear()
            rounds = []
            for _ in range(SHARE_RUNS):
                started = time.perf_counter()
                check_answered(graph.invoke(INPUTS, None, context={"user": ADMIN}), n)
                rounds.append(time.perf_counter() - started)
            in_round = median(inside)
            kind, arg = documents[0]
            again = probe.decide_many if kind == "many" else probe.decide
            loop = []
            for _ in range(SHARE_RUNS):
                started = time.perf_counter()
                again(arg)
                loop.append(time.perf_counter() - started)
            back_to_back = median(loop[SHARE_RUNS // 10 :])
            table.add(
                n,
                ms(median(rounds)),
                f"{in_round * 1e6:,.0f} µs",
                f"{in_round / median(rounds):.0%}",
                f"{back_to_back * 1e6:,.0f} µs",
                ratio(in_round, back_to_back),
            )
    finally:
        probe.close()
    table.note(
        "the engine's figures back to back (benchmarks 0 and 3) run with warm caches; "
        "inside a round the rest of the round (LangGraph, the tools, the model) has evicted "
        "the policy module's code and memory from the CPU caches, so one decision costs "
        "several times as much"
    )
    return table


if __name__ == "__main__":
    run()
