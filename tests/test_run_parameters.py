"""The argument names LangChain's run of a tool fills itself, and the calls that set one
(red team 66: ``config`` was decided and never reached the tool)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForToolRun
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, Tool, tool
from pydantic import BaseModel, Field

from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.guards.run_parameters import run_parameters
from langchain_opa_guard.testing import tool_call


@tool
def purge(table: str, config: dict[str, Any] | None = None) -> str:
    """Purge a table (a dry run when config says so)."""
    return table


def with_callbacks(query: str, callbacks: Any = None) -> str:
    """Search."""
    return query


def with_own_config(query: str, settings: RunnableConfig) -> str:
    """Search with the run's config under a name of its own."""
    return query


class Plain(BaseTool):
    name: str = "plain"
    description: str = "A tool of its own class."

    def _run(self, query: str) -> str:
        return query


class OwnRun(BaseTool):
    name: str = "own_run"
    description: str = "A tool whose run takes the manager and the config."

    def _run(
        self,
        query: str,
        run_manager: CallbackManagerForToolRun | None = None,
        cfg: RunnableConfig | None = None,
    ) -> str:
        return query


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (purge, {"config", "run_manager"}),
        (StructuredTool.from_function(with_callbacks), {"config", "run_manager", "callbacks"}),
        (StructuredTool.from_function(with_own_config), {"config", "run_manager", "settings"}),
        (Tool(name="t", func=lambda s: s, description="d"), {"config", "run_manager"}),
        (Plain(), set()),
        (OwnRun(), {"run_manager"}),
    ],
    ids=["tool", "callbacks", "own config name", "single input", "plain class", "own run"],
)
def test_the_names_a_run_fills_itself(subject: BaseTool, expected: set[str]) -> None:
    assert run_parameters(subject) == expected


def test_a_call_setting_one_is_refused_and_one_without_it_is_not() -> None:
    call, problem = prepared_call(purge, tool_call("purge", {"table": "t", "config": {}}, "c1"))
    assert problem is not None and problem.endswith("config")
    call, problem = prepared_call(purge, tool_call("purge", {"table": "t"}, "c2"))
    assert problem is None and call["args"] == {"table": "t"}


def test_a_field_set_under_its_alias_is_refused() -> None:
    class Arguments(BaseModel):
        table: str
        config: dict[str, Any] | None = Field(default=None, alias="options")

    def run(table: str, config: dict[str, Any] | None = None) -> str:
        """Purge."""
        return table

    aliased = StructuredTool.from_function(run, name="aliased", args_schema=Arguments)
    _, problem = prepared_call(aliased, tool_call("aliased", {"table": "t", "options": {}}, "c1"))
    assert problem is not None and problem.endswith("config")
