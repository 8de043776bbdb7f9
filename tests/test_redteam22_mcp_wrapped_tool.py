"""Red team 22: an MCP tool the application wraps (a logging or retry wrapper around the
adapters' tool, as any agent code does) escapes ``_served`` and its arguments are checked as a
local tool's: a key its schema does not list passes to the policy unread, and the MCP server
(FastMCP, Pydantic) reads it as the listed field.

``guards/prepared_calls.py`` ``_served`` counts a JSON-schema tool as served only when its
metadata carries the ``mcp_tools`` stamp or its ``coroutine``/``func`` was defined in
``langchain_mcp_adapters``. A wrapper ``StructuredTool(name=t.name, description=...,
args_schema=t.args_schema, coroutine=run)`` whose ``run`` awaits ``t.ainvoke(kwargs)`` keeps
the MCP schema (a dict) and sends every key to the server, but its coroutine is the
application's: not served, so the key ``purge_now`` (``AliasChoices("purgeNow", "purge_now")``
on the server; the schema names only ``purgeNow``) is let through, the policy (deny
``purgeNow: true``) allows, and the server runs ``purge=True``. It is red team 20's hole,
reopened by one wrapper. The control, ``purgeNow: true``, is denied.

The server is red team 20's (``tests/test_redteam20_mcp_hidden_field_names.py`` run as a
script).

What should happen: the stricter reading whenever the schema is a JSON schema (a dict), not
only when the tool is recognised as MCP: a key the schema does not list is refused for any
JSON-schema tool (a local function with a dict schema can take ``**kwargs`` and loses nothing
it was promised), or the stamp follows the schema (``mcp_tools`` marks the schema dict itself,
which a wrapper carries along).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool, StructuredTool
from mcp_server_kit import USER, ran

HERE = Path(__file__).resolve().parent
SERVER = HERE / "test_redteam20_mcp_hidden_field_names.py"

POLICY = """package redteam22wrapped

import rego.v1

deny contains "no purges" if {
	walk(input.tool.args, [path, v])
	count(path) > 0
	path[count(path) - 1] == "purgeNow"
	v == true
}

decision := {
	"allow": count(deny) == 0,
	"reasons": [{"code": "rt22", "message": m} | some m in deny],
}
"""


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    from langchain_opa_guard import EmbeddedPolicy

    (tmp_path / "redteam22wrapped.rego").write_text(POLICY)
    return EmbeddedPolicy(tmp_path, policy="redteam22wrapped/decision")


def logged(inner: BaseTool) -> BaseTool:
    """The application's wrapper: same name, description and schema; logs, then forwards."""

    async def run(**kwargs: Any) -> Any:
        return await inner.ainvoke(kwargs)

    return StructuredTool(
        name=inner.name,
        description=inner.description,
        args_schema=inner.args_schema,
        coroutine=run,
    )


def wrapped_tools(log: Path) -> list[BaseTool]:
    from langchain_mcp_adapters.client import MultiServerMCPClient

    connection = {"command": sys.executable, "args": [str(SERVER), str(log)], "transport": "stdio"}
    client = MultiServerMCPClient({"tickets": connection})  # type: ignore[dict-item]
    return [logged(t) for t in asyncio.run(client.get_tools())]


SURFACES = ["node", "interceptor", "middleware", "guard_tools"]


@pytest.mark.parametrize("surface", SURFACES)
def test_control_a_purge_under_its_schema_name_is_denied(
    engine: Any, tmp_path: Path, surface: str
) -> None:
    from surface_kit import run_turn

    log = tmp_path / "ran.jsonl"
    args = {"ticket_id": "T-1", "options": {"purgeNow": True}}
    answer, _ = run_turn(
        surface, engine, wrapped_tools(log), "drop", args, "ainvoke", context={"user": USER}
    )
    assert ran(log) == [], answer.content


@pytest.mark.parametrize("surface", SURFACES)
def test_a_wrapped_mcp_tool_does_not_run_a_field_the_policy_never_saw(
    engine: Any, tmp_path: Path, surface: str
) -> None:
    from surface_kit import run_turn

    log = tmp_path / "ran.jsonl"
    args = {"ticket_id": "T-1", "options": {"purge_now": True}}
    answer, _ = run_turn(
        surface, engine, wrapped_tools(log), "drop", args, "ainvoke", context={"user": USER}
    )
    purged = [r for r in ran(log) if r["purge"] is True]
    assert purged == [], (
        f"the policy allowed drop({args!r}), where it saw no purgeNow; the wrapped MCP tool "
        f"ran with purge=True ({answer.content!r:.200})"
    )
