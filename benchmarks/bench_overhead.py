"""Benchmark 1: what the guard adds to a ReAct round.

One round: user message -> the scripted model proposes N parallel tool calls -> tools ->
the model answers. The guarded graph is the demo's ``build_agent`` (``agent -> guard ->
tools``) on the embedded engine and on a real OPA sidecar over loopback; the unguarded one
is the same graph without the guard node (``agent -> ToolNode``, ``tools_condition``), with
the same scripted model and tools. All calls are allowed (an admin reading a name), so the
three graphs do the same tool work. ``graph.invoke``, sides interleaved round by round.
"""

from __future__ import annotations

from typing import Any

from common import POLICIES, interleaved, ms, start_opa
from harness import (
    ADMIN,
    INPUTS,
    NotedTable,
    admin_model,
    check_answered,
    ratio,
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
            "Guard overhead per ReAct round (graph.invoke; medians of "
            f"{ROUNDS} interleaved rounds x {INNER} runs)",
            [
                "calls",
                "unguarded",
                "no-op node instead of the guard",
                "no-op / unguarded",
                "embedded",
                "embedded / unguarded",
                "OPA sidecar",
                "OPA sidecar / unguarded",
                "OPA sidecar, batch",
                "batch / unguarded",
            ],
        )
        at_three: dict[str, float] = {}
        for n in COUNTS:
            tools, _db = customer_db_tools()
            graphs = {
                "unguarded": unguarded_agent(admin_model(n), tools),
                "noop": unguarded_agent(admin_model(n), tools, noop_node=True),
                "embedded": build_agent(embedded, admin_model(n), tools),
                "opa": build_agent(server, admin_model(n), tools),
                "batch": build_agent(batched, admin_model(n), tools),
            }

            def side(graph: Any) -> Any:
                return lambda: graph.invoke(INPUTS, context={"user": ADMIN})

            for graph in graphs.values():
                check_answered(graph.invoke(INPUTS, context={"user": ADMIN}), n)
            medians = interleaved(
                {name: side(g) for name, g in graphs.items()}, rounds=ROUNDS, inner=INNER
            )
            base = medians["unguarded"]
            table.add(
                n,
                ms(base),
                ms(medians["noop"]),
                ratio(medians["noop"], base),
                ms(medians["embedded"]),
                ratio(medians["embedded"], base),
                ms(medians["opa"]),
                ratio(medians["opa"], base),
                ms(medians["batch"]),
                ratio(medians["batch"], base),
            )
            if n == 3:
                at_three = {k: v / base for k, v in medians.items()}
        if at_three:
            for key, label, goal in (
                ("embedded", "embedded", 1.15),
                ("opa", "OPA sidecar", 1.30),
                ("batch", "OPA sidecar with batch=True", 1.30),
            ):
                got = at_three[key]
                verdict = "met" if got <= goal else "NOT met"
                table.note(f"goal for 3 calls, {label} <= {goal:.2f}x: {got:.2f}x ({verdict})")
        table.note(
            "no-op node: a node that returns nothing where the guard would be (agent -> noop "
            "-> tools), i.e. what one more LangGraph step costs before the guard does any work"
        )
        table.note(
            "the guard decides the calls of a turn concurrently over OPA (a thread pool on the "
            "sync path), in one request with batch=True, and in order on the embedded engine; "
            "OPA runs on the same 2 cores"
        )
        return [table]
    finally:
        server.close()
        batched.close()
        embedded.close()
        opa.stop()


if __name__ == "__main__":
    run()
