"""Red team 66: an MCP tool parameter named ``config`` (or ``run_manager``) is decided by the
policy and never sent to the server.

The adapters build an MCP tool as a ``StructuredTool`` whose coroutine takes the arguments as
``**arguments``. LangChain's ``BaseTool.arun`` overwrites the keyword ``config`` with the
run's ``RunnableConfig`` and ``run_manager`` with its callback manager, and
``StructuredTool._arun`` consumes both itself: the server is called without them and runs
with its own default. Every guard decides the model's value (``input.tool.args.config``).

What was done: a FastMCP server tool ``deploy(service, config: dict | None = None)`` that
deploys to production unless ``config`` says ``{"env": "staging"}``; a policy that allows
``deploy`` only to staging. The model proposes ``deploy({"service": "billing", "config":
{"env": "staging"}})`` on each wiring (guard node, ``ToolCallGuard``, ``OPAGuardMiddleware``,
``guard_tools``), ``ainvoke``.

Observed on this branch: allowed, and the server deploys to *production* (it received no
``config``), on every wiring; the same call without ``config`` is denied (the control).

Expected: the server runs the call as decided, or the guard refuses it before it runs.

Run as a script, this file is the MCP server (stdio): ``python this.py LOG``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mcp_server_kit import SURFACES, policy_engine, ran, recorder, run_server_tool

if TYPE_CHECKING:  # the file is also the MCP server: it starts without the guard
    from langchain_opa_guard import EmbeddedPolicy

POLICY = """package redteam66mcp

import rego.v1

default decision := {"allow": false, "reasons": ["deploys go to staging only"]}

decision := {"allow": true, "reasons": []} if input.tool.args.config.env == "staging"
"""


def serve(log: Path) -> None:
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("tickets", log_level="ERROR")
    record = recorder(log)

    @server.tool(description="Deploy a service; config {'env': 'staging'} for staging.")
    def deploy(service: str, config: dict[str, Any] | None = None) -> str:
        env = (config or {}).get("env", "production")
        record("deploy", value=env)
        return f"deployed {service} to {env}"

    server.run(transport="stdio")


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam66mcp", POLICY)


@pytest.mark.parametrize("surface", SURFACES)
def test_control_a_production_deploy_is_denied(
    engine: EmbeddedPolicy, tmp_path: Path, surface: str
) -> None:
    log = tmp_path / "ran.jsonl"
    answer = run_server_tool(__file__, log, surface, engine, "deploy", {"service": "billing"})
    assert ran(log) == [], answer.content


@pytest.mark.parametrize("surface", SURFACES)
def test_an_allowed_staging_deploy_does_not_reach_production(
    engine: EmbeddedPolicy, tmp_path: Path, surface: str
) -> None:
    log = tmp_path / "ran.jsonl"
    args = {"service": "billing", "config": {"env": "staging"}}
    answer = run_server_tool(__file__, log, surface, engine, "deploy", args)
    envs = [r["value"] for r in ran(log)]
    assert "production" not in envs, (
        "the policy allowed deploy(config={'env': 'staging'}); the server got no config and "
        f"deployed to production, which the policy denies: {answer.content!r:.200}"
    )


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
