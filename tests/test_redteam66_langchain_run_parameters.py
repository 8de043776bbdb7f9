"""Red team 66: a model argument named like one of LangChain's own run parameters
(``config``, ``run_manager``) is decided by the policy and never reaches the tool.

``BaseTool.run``/``arun`` hand ``StructuredTool._run``/``_arun`` the run's ``RunnableConfig``
under the keyword ``config`` and its callback manager under ``run_manager``
(``tool_kwargs |= {"config": config}``), overwriting whatever the model sent under those
names; ``StructuredTool`` then consumes both itself and calls the function without them, so
the function runs with its *default* for that parameter. A plain ``@tool`` function with an
ordinary parameter named ``config`` (``purge(table, config: dict | None = None)``) shows the
model ``config`` in its schema, and every guard decides the model's value of it
(``input.tool.args.config``), as the README promises ("every other value the model sends and
the tool reads is decided"; "defaults the model left out are not added").

What was done: a policy that allows ``purge`` only as a dry run
(``input.tool.args.config.mode == "dry_run"``; the tool's default is a live purge). The
model proposes ``purge({"table": "users", "config": {"mode": "dry_run"}})`` on each wiring
(guard node + ``GuardedToolNode``, ``ToolCallGuard`` interceptor, ``OPAGuardMiddleware``,
``guard_tools``), sync and async.

Observed on this branch: the policy allows the dry run, and the tool runs a *live* purge
(``config`` is ``None`` in the function) on every wiring, although the same call without
``config`` (what actually ran) is denied (the control).

Expected: the call runs as decided, or it is refused before it runs (``invalid_call``: an
argument the tool cannot receive, like an injected argument the model sets), so that a
purge the policy denies never runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool, tool
from mcp_server_kit import policy_engine
from surface_kit import SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy

USER = {"id": "u-1", "role": "tester"}

POLICY = """package redteam66run

import rego.v1

default decision := {"allow": false, "reasons": ["only a dry run may purge"]}

decision := {"allow": true, "reasons": []} if input.tool.args.config.mode == "dry_run"
"""


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam66run", POLICY)


def purge_tool(ran: list[Any]) -> BaseTool:
    @tool
    def purge(table: str, config: dict[str, Any] | None = None) -> str:
        """Purge a table. With config {"mode": "dry_run"} it only reports what it would do."""
        mode = (config or {}).get("mode", "live")
        ran.append(mode)
        return f"{mode} purge of {table}"

    return purge


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize("surface", SURFACES)
def test_control_a_live_purge_is_denied(engine: EmbeddedPolicy, surface: str, mode: str) -> None:
    ran: list[Any] = []
    answer, _ = run_turn(
        surface,
        engine,
        [purge_tool(ran)],
        "purge",
        {"table": "users"},
        mode,
        context={"user": USER},
    )
    assert ran == [], answer.content
    assert answer.status == "error"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize("surface", SURFACES)
def test_an_allowed_dry_run_is_not_run_live(
    engine: EmbeddedPolicy, surface: str, mode: str
) -> None:
    ran: list[Any] = []
    answer, _ = run_turn(
        surface,
        engine,
        [purge_tool(ran)],
        "purge",
        {"table": "users", "config": {"mode": "dry_run"}},
        mode,
        context={"user": USER},
    )
    assert "live" not in ran, (
        "the policy allowed purge(config={'mode': 'dry_run'}); the tool ran with its default "
        f"config (a live purge), which the policy denies: {answer.content!r:.200}"
    )
