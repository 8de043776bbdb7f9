"""``mcp_tools(client, recheck=True)``: a call is refused, never sent, when the server now
defines the tool otherwise than when it was loaded.

The pins of the shipped policy compare the digest taken when the tools were loaded: a server
that changes a tool's definition while the agent runs (a new release, a "rug pull") is not
seen by them, since the guard decides on the loaded definition while the server reads the
call with its new one. With ``recheck=True`` each call first reads the server's current
definition; real servers (``tests/mcp_servers.py``, definitions changed through their
``--changes`` file), a real OPA and the embedded engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from test_guard_node import INTERNAL
from test_mcp import POISONED, Servers, answers, node_surface, pinnable_opa, pinned, servers, web

from langchain_opa_guard import PolicyEngine, guard_tools, mcp_pins, mcp_tools
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

__all__ = ["pinnable_opa", "pinned", "servers", "web"]  # fixtures used from test_mcp

USER = {"configurable": {"user": INTERNAL}}
CASES = {
    "stdio": ("tickets", "get_ticket", {"ticket_id": "T-1"}),
    "http": ("web", "fetch_page", {"url": "https://partner.test"}),
}


def change(servers: Servers, transport: str, tool: str) -> None:
    changes = servers.tickets_changes if transport == "stdio" else servers.web.changes
    changes.write_text(json.dumps({tool: {"description": POISONED}}))  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_an_unchanged_definition_runs(servers: Servers, transport: str) -> None:
    server, tool, args = CASES[transport]
    tools = await mcp_tools(servers.client(), servers=[server], recheck=True)
    reply = await next(t for t in tools if t.name == tool).ainvoke(args)
    assert "was not called" not in str(reply)
    assert servers.ran() == [(server, tool)]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_definition_changed_after_loading_is_not_called(
    servers: Servers, pinned: Callable[[dict[str, Any]], PolicyEngine], transport: str
) -> None:
    server, tool, args = CASES[transport]
    client = servers.client()
    checked = await mcp_tools(client, servers=[server], recheck=True)
    plain = await mcp_tools(client, servers=[server])
    engine = pinned(mcp_pins(checked))  # reviewed as loaded
    change(servers, transport, tool)  # the server changes the tool while the agent runs
    # The policy still allows it (the loaded definition is the pinned one) ...
    guarded = next(t for t in guard_tools(checked, engine) if t.name == tool)
    reply = await guarded.ainvoke(args, USER)
    # ... and the recheck refuses it before anything reaches the server.
    assert f'MCP tool "{tool}" of server "{server}" was not called' in str(reply)
    assert "differently from when it was loaded" in str(reply)
    assert servers.ran() == []
    # Control: without recheck the same call is sent to the changed server.
    await next(t for t in guard_tools(plain, engine) if t.name == tool).ainvoke(args, USER)
    assert servers.ran() == [(server, tool)]


async def test_a_changed_definition_is_refused_in_the_graph(
    servers: Servers, pinned: Callable[[dict[str, Any]], PolicyEngine]
) -> None:
    tools = await mcp_tools(servers.client(), servers=["web"], recheck=True)
    engine = pinned(mcp_pins(tools))
    change(servers, "http", "fetch_page")
    model = ScriptedChatModel(
        script=[
            AIMessage(
                "", tool_calls=[tool_call("fetch_page", {"url": "https://partner.test"}, "f1")]
            ),
            "done",
        ]
    )
    result = await node_surface(engine, model, tools).ainvoke(
        {"messages": [("user", "read the partner page")]}, context={"user": INTERNAL}
    )
    reply = answers(result["messages"])["f1"]
    assert reply.status == "error" and "was not called" in str(reply.content)
    assert servers.ran() == []


async def test_an_unreachable_server_is_refused(servers: Servers) -> None:
    client = servers.client()
    tools = await mcp_tools(client, servers=["web"], recheck=True)
    client.connections["web"]["url"] = "http://127.0.0.1:9/mcp"  # the server went away
    reply = await next(t for t in tools if t.name == "fetch_page").ainvoke(
        {"url": "https://partner.test"}
    )
    assert "could not be asked for its current definition" in str(reply)
    assert servers.ran() == []
