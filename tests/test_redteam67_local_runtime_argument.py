"""Red team 67 (pin, passes): a local tool's ordinary parameter named ``runtime`` (not
annotated ``ToolRuntime``), which LangGraph's ``ToolNode`` takes for its own and every guard
drops the model's value of where the call runs (``without_injected``).

What was done: ``@tool run_job(job: str, runtime: str = "production")``; a policy that
allows it only with ``runtime == "sandbox"``; the model proposes ``run_job({"job":
"migrate", "runtime": "sandbox"})`` on each wiring, sync and async, with LangChain 1.8 /
LangGraph 1.2 and with 1.2 / 1.0 (where ``injected_fields`` does not name ``runtime`` but
``toolnode_injections`` does).

Observed and expected: the tool never runs with anything but the decided
``runtime="sandbox"`` (the call is refused or denied). Compare the MCP tool of
``test_redteam67_mcp_runtime_argument.py``, where it does. The control: the call without
``runtime`` is denied.
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

POLICY = """package redteam67local

import rego.v1

default decision := {"allow": false, "reasons": ["jobs run in the sandbox only"]}

decision := {"allow": true, "reasons": []} if input.tool.args.runtime == "sandbox"
"""


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam67local", POLICY)


def job_tool(ran: list[Any]) -> BaseTool:
    @tool
    def run_job(job: str, runtime: str = "production") -> str:
        """Run a job in a runtime: "sandbox" or "production" (the default)."""
        ran.append(runtime if isinstance(runtime, str) else type(runtime).__name__)
        return f"ran {job}"

    return run_job


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize("surface", SURFACES)
def test_control_a_run_without_runtime_is_denied(
    engine: EmbeddedPolicy, surface: str, mode: str
) -> None:
    ran: list[Any] = []
    answer, _ = run_turn(
        surface,
        engine,
        [job_tool(ran)],
        "run_job",
        {"job": "migrate"},
        mode,
        context={"user": USER},
    )
    assert ran == [], answer.content


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize("surface", SURFACES)
def test_an_allowed_sandbox_run_runs_in_the_sandbox(
    engine: EmbeddedPolicy, surface: str, mode: str
) -> None:
    """See the module docstring."""
    ran: list[Any] = []
    answer, _ = run_turn(
        surface,
        engine,
        [job_tool(ran)],
        "run_job",
        {"job": "migrate", "runtime": "sandbox"},
        mode,
        context={"user": USER},
    )
    assert all(r == "sandbox" for r in ran), (
        "the policy allowed run_job(runtime='sandbox'); the tool ran with runtime="
        f"{ran!r}: {answer.content!r:.200}"
    )
