"""A real FastMCP server over stdio whose tools log what they ran, and the guard's surfaces
around it: for the tests of how MCP arguments are decided against how the server reads them.

A test file is its own server: run as a script (``python test_file.py LOG``) it serves its
tools, each writing one JSON line per run to ``LOG``; as a test it connects to itself with
:func:`run_server_tool` and reads the log with :func:`ran`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the file is also the MCP server: it starts without the guard
    from langchain_opa_guard import EmbeddedPolicy

USER = {"id": "u-1", "role": "tester"}
SURFACES = ["node", "interceptor", "middleware", "guard_tools"]


def recorder(log: Path) -> Callable[..., None]:
    """``record(tool, **fields)``: one JSON line ``{"tool": tool, **fields}`` in ``log``."""

    def record(tool: str, **fields: Any) -> None:
        with log.open("a") as out:
            out.write(json.dumps({"tool": tool, **fields}, default=str) + "\n")

    return record


def ran(log: Path) -> list[Any]:
    """What the server's tools ran, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def policy_engine(folder: Path, package: str, policy: str) -> EmbeddedPolicy:
    """An embedded engine on ``policy`` (Rego of ``package``, deciding ``decision``)."""
    from langchain_opa_guard import EmbeddedPolicy

    (folder / f"{package}.rego").write_text(policy)
    return EmbeddedPolicy(folder, policy=f"{package}/decision")


def server_tools(script: str | Path, log: Path) -> list[Any]:
    """The guard's MCP tools of the server ``python script log``."""
    from langchain_mcp_adapters.client import MultiServerMCPClient

    from langchain_opa_guard import mcp_tools

    connection = {
        "command": sys.executable,
        "args": [str(Path(script).resolve()), str(log)],
        "transport": "stdio",
    }
    client = MultiServerMCPClient({"tickets": connection})  # type: ignore[dict-item]
    return asyncio.run(mcp_tools(client))


def run_server_tool(
    script: str | Path,
    log: Path,
    surface: str,
    engine: EmbeddedPolicy,
    tool: str,
    args: dict[str, Any],
) -> Any:
    """One call of the server's ``tool`` through the guard's ``surface`` (``ainvoke``, as
    :data:`USER`); the answer the model gets."""
    from surface_kit import run_turn

    answer, _ = run_turn(
        surface, engine, server_tools(script, log), tool, args, "ainvoke", context={"user": USER}
    )
    return answer
