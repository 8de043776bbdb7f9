"""Benchmark 8: MCP tools, and where to decide their calls.

The tests' MCP servers (``tests/mcp_servers.py``, FastMCP): ``tickets`` over stdio and ``web``
over streamable HTTP on loopback, each through one persistent ``langchain-mcp-adapters``
session, so the figures hold the guard's cost and the MCP round trip, not process starts.
One ReAct round with one call; the embedded engine; ``graph.ainvoke``; sides interleaved.

Four places to decide:

* no guard: ``agent -> ToolNode``;
* the guard node (``agent -> guard -> ToolNode``);
* the ``ToolNode`` interceptor (``ToolCallGuard``; the middleware uses the same hook);
* langchain-mcp-adapters' own tool-call interceptor (``tool_interceptors=``), prototyped here
  over the same ``ToolCallGuard`` (runtime state, config and context come from the
  ``ToolRuntime`` the adapters pass in ``request.runtime``).

Besides time, the second table records what a denied call leaves behind: whether the tool
was started (an ``execute_tool`` span and tool callbacks for a call that never ran), and
which surfaces see calls made outside a graph.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from common import POLICIES, ROOT, ms
from harness import NotedTable, ratio
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import ensure_config
from langchain_core.tools import BaseTool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(ROOT / "tests"))

from mcp_process import MCPHTTPServer, calls_in, stdio_connection

from langchain_opa_guard import (
    EmbeddedPolicy,
    OTelCallbackHandler,
    PolicyEngine,
    ToolCallGuard,
    guard_tools,
    with_mcp_metadata,
)
from langchain_opa_guard.demo import build_agent
from langchain_opa_guard.guards.denials import denial_message
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

INTERNAL = {"id": "user-456", "role": "internal_user"}
GUEST = {"id": "user-789", "role": "guest"}
ROUNDS = 25
INNER = 5


class AdapterHookGuard:
    """A langchain-mcp-adapters ``ToolCallInterceptor`` that asks a ``ToolCallGuard``."""

    def __init__(self, engine: PolicyEngine, server: str) -> None:
        self.engine = engine
        self.server = server
        self.guard: ToolCallGuard | None = None  # set once the tools are loaded

    async def __call__(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        assert self.guard is not None
        runtime = request.runtime
        # In a graph the ToolRuntime has the config; outside one, the tool's own run has it.
        config = getattr(runtime, "config", None) or ensure_config()
        call = tool_call(request.name, dict(request.args), getattr(runtime, "tool_call_id", None))
        decision = await self.guard.acheck(
            call, getattr(runtime, "state", None), config, getattr(runtime, "context", None)
        )
        if not decision.allow:
            return denial_message(decision, call, "full")
        return await handler(request)


def react_graph(model: Any, node: ToolNode) -> Any:
    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


def one_call(name: str, args: dict[str, Any]) -> ScriptedChatModel:
    return ScriptedChatModel(script=[AIMessage("", tool_calls=[tool_call(name, args, "c1")]), "ok"])


async def ainterleaved(
    sides: Mapping[str, Callable[[], Awaitable[Any]]], *, rounds: int, inner: int
) -> dict[str, float]:
    """Median seconds per run of each side, in alternating rounds (async twin of
    ``common.interleaved``)."""
    for fn in sides.values():
        for _ in range(2):
            await fn()
    samples: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    gc.disable()
    try:
        for r in range(rounds):
            for name in names if r % 2 == 0 else reversed(names):
                start = time.perf_counter()
                for _ in range(inner):
                    await sides[name]()
                samples[name].append((time.perf_counter() - start) / inner)
            gc.collect()
    finally:
        gc.enable()
    return {name: statistics.median(v) for name, v in samples.items()}


async def measure(work: Path) -> list[NotedTable]:
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_mcp_adapters.tools import load_mcp_tools

    engine = EmbeddedPolicy(POLICIES)
    log = work / "calls.jsonl"
    web = MCPHTTPServer("web", log).start()
    try:
        client = MultiServerMCPClient(
            {"tickets": stdio_connection("tickets", log), "web": web.connection()}
        )
        async with AsyncExitStack() as stack:
            sessions = {
                name: await stack.enter_async_context(client.session(name))
                for name in ("tickets", "web")
            }
            plain: list[BaseTool] = []
            hooked: list[BaseTool] = []
            hooks = []
            for name, session in sessions.items():
                plain += with_mcp_metadata(await load_mcp_tools(session, server_name=name), name)
                hook = AdapterHookGuard(engine, name)
                hooks.append(hook)
                loaded = await load_mcp_tools(session, server_name=name, tool_interceptors=[hook])
                hooked += with_mcp_metadata(loaded, name)
            for hook in hooks:
                hook.guard = ToolCallGuard(engine, registry=hooked)
            interceptor = ToolCallGuard(engine, registry=plain)

            def graphs(model: Any) -> dict[str, Any]:
                return {
                    "no guard": react_graph(model, ToolNode(plain)),
                    "guard node": build_agent(engine, model, plain),
                    "ToolNode interceptor": react_graph(
                        model,
                        ToolNode(
                            plain,
                            wrap_tool_call=interceptor.wrap_tool_call,
                            awrap_tool_call=interceptor.awrap_tool_call,
                        ),
                    ),
                    "adapters' interceptor": react_graph(model, ToolNode(hooked)),
                }

            timing = NotedTable(
                "One MCP call per ReAct round, allowed (graph.ainvoke, embedded engine; medians "
                f"of {ROUNDS} interleaved rounds x {INNER} runs)",
                [
                    "call",
                    "server",
                    "no guard",
                    "guard node",
                    "ToolNode interceptor",
                    "adapters' interceptor",
                    "adapters' / ToolNode interceptor",
                ],
            )
            cases = [
                ("get_ticket", {"ticket_id": "T-1"}, "tickets (stdio)"),
                ("fetch_page", {"url": "https://partner.test"}, "web (HTTP)"),
            ]
            for name, args, where in cases:
                built = graphs(one_call(name, args))

                def side(graph: Any) -> Callable[[], Awaitable[Any]]:
                    async def run() -> None:
                        result = await graph.ainvoke(
                            {"messages": [("user", "go")]}, context={"user": INTERNAL}
                        )
                        reply = next(m for m in result["messages"] if isinstance(m, ToolMessage))
                        assert reply.status == "success", reply.content

                    return run

                medians = await ainterleaved(
                    {k: side(g) for k, g in built.items()}, rounds=ROUNDS, inner=INNER
                )
                base = medians["no guard"]
                hook = medians["adapters' interceptor"]
                timing.add(
                    name,
                    where,
                    ms(base),
                    f"{ms(medians['guard node'])} ({ratio(medians['guard node'], base)})",
                    f"{ms(medians['ToolNode interceptor'])} "
                    f"({ratio(medians['ToolNode interceptor'], base)})",
                    f"{ms(hook)} ({ratio(hook, base)})",
                    ratio(hook, medians["ToolNode interceptor"]),
                )

            denied = NotedTable(
                "A denied MCP call (a guest reads a ticket), in a graph and as a direct "
                "tool.ainvoke outside any graph",
                [
                    "place",
                    "denied call ran on the server",
                    "execute_tool span for the denied call",
                    "direct call outside a graph",
                ],
            )
            places = graphs(one_call("get_ticket", {"ticket_id": "T-1"}))
            places["guard_tools"] = react_graph(
                one_call("get_ticket", {"ticket_id": "T-1"}), ToolNode(guard_tools(plain, engine))
            )
            direct_tools = {
                "guard node": plain,
                "ToolNode interceptor": plain,
                "adapters' interceptor": hooked,
                "guard_tools": guard_tools(plain, engine),
            }
            for place, graph in places.items():
                if place == "no guard":
                    continue
                exporter = InMemorySpanExporter()
                provider = TracerProvider()
                provider.add_span_processor(SimpleSpanProcessor(exporter))
                before = len(calls_in(log))
                result = await graph.ainvoke(
                    {"messages": [("user", "go")]},
                    {"callbacks": [OTelCallbackHandler(provider)]},
                    context={"user": GUEST},
                )
                reply = next(m for m in result["messages"] if isinstance(m, ToolMessage))
                assert reply.status == "error" and "guest" in str(reply.content)
                ran = len(calls_in(log)) > before
                spans = [s.name for s in exporter.get_finished_spans()]
                tool = next(t for t in direct_tools[place] if t.name == "get_ticket")
                before = len(calls_in(log))
                await tool.ainvoke({"ticket_id": "T-2"}, {"configurable": {"user": GUEST}})
                direct = "ran (not checked)" if len(calls_in(log)) > before else "denied"
                denied.add(
                    place,
                    "yes" if ran else "no",
                    "yes" if "execute_tool get_ticket" in spans else "no",
                    direct,
                )
            denied.note(
                "The adapters' hook runs inside the tool, after its callbacks have started: a "
                "denied call gets an execute_tool span although nothing ran. It sees only MCP "
                "tools, one call at a time; its request names the server but carries no "
                "definition (annotations, digest), so it needs the loaded tools' metadata anyway."
            )
    finally:
        web.stop()
    return [timing, denied]


def run() -> list[NotedTable]:
    with tempfile.TemporaryDirectory() as work:
        return asyncio.run(measure(Path(work)))


if __name__ == "__main__":
    run()
