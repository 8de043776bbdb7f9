"""Red team 67: an MCP tool parameter named ``runtime`` is decided by the policy and never
sent to the server.

The adapters build an MCP tool's coroutine as ``call_tool(runtime: Annotated[object | None,
InjectedToolArg()] = None, **arguments)``: LangGraph's ``ToolNode`` fills ``runtime`` with
its ``ToolRuntime``, and every guard drops the model's value for it where the call runs
(``without_injected``: ``toolnode_injections`` names ``runtime`` for MCP tools), so a server
parameter of that name never reaches the server, which runs with its own default. The
policy, though, is given the call as the JSON-schema tool reads it (the model's arguments
as they are), ``runtime`` included.

What was done: a FastMCP tool ``run_job(job, runtime: str = "production")`` (the
environment the job runs in); a policy that allows ``run_job`` only with ``runtime ==
"sandbox"``. The model proposes ``run_job({"job": "migrate", "runtime": "sandbox"})`` on each
wiring (guard node, ``ToolCallGuard``, ``OPAGuardMiddleware``, ``guard_tools``),
``ainvoke``.

Observed on this branch: with the guard node + ``GuardedToolNode`` and with
``OPAGuardMiddleware``, the policy allows the sandbox run and the server runs the job in
*production* (it received no ``runtime``); the same call without ``runtime`` is denied (the
control). (``guard_tools`` decides the call without ``runtime``, so it is denied, and the
``ToolCallGuard`` interceptor's start check refuses it as "reads differently now": both
pass.)

Expected: the server runs the call as decided, or the guard refuses it before it runs (as
it refuses ``config`` since red team 66: an argument the tool's run fills itself).

Run as a script, this file is the MCP server (stdio): ``python this.py LOG``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mcp_server_kit import SURFACES, policy_engine, ran, recorder, run_server_tool

if TYPE_CHECKING:  # the file is also the MCP server: it starts without the guard
    from langchain_opa_guard import EmbeddedPolicy

POLICY = """package redteam67mcp

import rego.v1

default decision := {"allow": false, "reasons": ["jobs run in the sandbox only"]}

decision := {"allow": true, "reasons": []} if input.tool.args.runtime == "sandbox"
"""


def serve(log: Path) -> None:
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("jobs", log_level="ERROR")
    record = recorder(log)

    @server.tool(description="Run a job in a runtime: 'sandbox' or 'production' (default).")
    def run_job(job: str, runtime: str = "production") -> str:
        record("run_job", value=runtime)
        return f"ran {job} in {runtime}"

    server.run(transport="stdio")


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam67mcp", POLICY)


@pytest.mark.parametrize("surface", SURFACES)
def test_control_a_production_run_is_denied(
    engine: EmbeddedPolicy, tmp_path: Path, surface: str
) -> None:
    log = tmp_path / "ran.jsonl"
    answer = run_server_tool(__file__, log, surface, engine, "run_job", {"job": "migrate"})
    assert ran(log) == [], answer.content


@pytest.mark.parametrize("surface", SURFACES)
def test_an_allowed_sandbox_run_does_not_reach_production(
    engine: EmbeddedPolicy, tmp_path: Path, surface: str
) -> None:
    """See the module docstring: the policy decides ``runtime: "sandbox"``; the server is
    called without it and runs in production."""
    log = tmp_path / "ran.jsonl"
    args = {"job": "migrate", "runtime": "sandbox"}
    answer = run_server_tool(__file__, log, surface, engine, "run_job", args)
    runtimes = [r["value"] for r in ran(log)]
    assert "production" not in runtimes, (
        "the policy allowed run_job(runtime='sandbox'); the server got no runtime and ran in "
        f"production, which the policy denies: {answer.content!r:.200}"
    )


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
