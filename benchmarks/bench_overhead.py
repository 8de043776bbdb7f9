"""Benchmark 1: what the guard adds to a ReAct round.

One round: user message -> the scripted model proposes N parallel tool calls -> tools ->
the model answers. The guarded graph is the demo's ``build_agent`` (``agent -> guard ->
tools``) on the embedded engine and on a real OPA sidecar over loopback. Two unguarded
graphs: the classic ReAct round (``agent -> ToolNode`` through ``tools_condition``, the
calls of a turn in one task) and the same round with each call a task of its own (a
``Send`` per call, as LangChain's ``create_agent`` does and as the guard must, so that a
retried or interrupted task never runs its neighbours again). All calls are allowed (an
admin reading a name), so every graph does the same tool work. ``graph.invoke``, sides
interleaved round by round; wall time and this process's CPU time (all threads) per run.
"""

from __future__ import annotations

import os
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
            "Guard overhead per ReAct round (graph.invoke; wall time, medians of "
            f"{ROUNDS} interleaved rounds x {INNER} runs)",
            [
                "calls",
                "unguarded (ToolNode)",
                "no-op node / unguarded",
                "a task per call, no guard",
                "task per call / unguarded",
                "embedded guard",
                "embedded / unguarded",
                "embedded / task per call",
                "OPA sidecar",
                "OPA sidecar / unguarded",
                "OPA sidecar, batch",
                "batch / unguarded",
            ],
        )
        cpu_table = NotedTable(
            "The same rounds in CPU time (this process, all threads; medians per run)",
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
        at_three: dict[str, float] = {}
        for n in COUNTS:
            tools, _db = customer_db_tools()
            graphs = {
                "unguarded": unguarded_agent(admin_model(n), tools),
                "noop": unguarded_agent(admin_model(n), tools, noop_node=True),
                "task_per_call": task_per_call_agent(admin_model(n), tools),
                "embedded": build_agent(embedded, admin_model(n), tools),
                "opa": build_agent(server, admin_model(n), tools),
                "batch": build_agent(batched, admin_model(n), tools),
            }

            def side(graph: Any) -> Any:
                def block() -> int:
                    for _ in range(INNER):
                        graph.invoke(INPUTS, context={"user": ADMIN})
                    return INNER

                return block

            for graph in graphs.values():
                check_answered(graph.invoke(INPUTS, context={"user": ADMIN}), n)
            cpu: dict[str, list[float]] = {}
            samples = timed_rounds(
                {name: side(g) for name, g in graphs.items()}, rounds=ROUNDS, warmup=3, cpu=cpu
            )
            wall = {name: median(values) for name, values in samples.items()}
            used = {name: median(values) for name, values in cpu.items()}
            base, per_call = wall["unguarded"], wall["task_per_call"]
            table.add(
                n,
                ms(base),
                ratio(wall["noop"], base),
                ms(per_call),
                ratio(per_call, base),
                ms(wall["embedded"]),
                ratio(wall["embedded"], base),
                ratio(wall["embedded"], per_call),
                ms(wall["opa"]),
                ratio(wall["opa"], base),
                ms(wall["batch"]),
                ratio(wall["batch"], base),
            )
            cpu_table.add(
                n,
                ms(used["unguarded"]),
                ms(used["task_per_call"]),
                ratio(used["task_per_call"], used["unguarded"]),
                ms(used["embedded"]),
                ratio(used["embedded"], used["unguarded"]),
                ratio(used["embedded"], used["task_per_call"]),
            )
            if n == 3:
                at_three = {k: v / base for k, v in wall.items()}
                at_three["embedded_vs_tasks"] = wall["embedded"] / per_call
                at_three["cpu_embedded"] = used["embedded"] / used["unguarded"]
                at_three["cpu_tasks"] = used["task_per_call"] / used["unguarded"]
                at_three["cpu_embedded_vs_tasks"] = used["embedded"] / used["task_per_call"]
        if at_three:
            for key, label, goal in (
                ("embedded", "embedded", 1.15),
                ("opa", "OPA sidecar", 1.30),
                ("batch", "OPA sidecar with batch=True", 1.30),
            ):
                got = at_three[key]
                verdict = "met" if got <= goal else "NOT met"
                table.note(
                    f"goal for 3 calls, {label} <= {goal:.2f}x the unguarded ToolNode round: "
                    f"{got:.2f}x ({verdict})"
                )
            table.note(
                "where the embedded guard's time over the ToolNode round goes, 3 calls: one "
                f"task per call alone costs {at_three['task_per_call']:.2f}x wall / "
                f"{at_three['cpu_tasks']:.2f}x CPU (LangGraph's per-task work: a thread, a "
                "config, callbacks, writes for each task); the guard itself (its node, the "
                "decision, grants and checks where the tools run) "
                f"{at_three['embedded_vs_tasks']:.2f}x wall / "
                f"{at_three['cpu_embedded_vs_tasks']:.2f}x CPU of that graph"
            )
        table.note(
            "no-op node: a node that returns nothing where the guard would be (agent -> noop "
            "-> tools), i.e. what one more LangGraph step costs before the guard does any work"
        )
        table.note(
            "the guard decides the calls of a turn in one guest call on the embedded engine, "
            "concurrently over OPA (a thread pool on the sync path), in one request with "
            f"batch=True; OPA runs on the same {os.cpu_count()} cores"
        )
        return [table, cpu_table]
    finally:
        server.close()
        batched.close()
        embedded.close()
        opa.stop()


if __name__ == "__main__":
    run()
