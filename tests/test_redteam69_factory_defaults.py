"""Red team 69: a default factory's value made from the other arguments, which red team
67's fix (``schema_views._made_default``) neither shows nor refuses.

The README: "a field the model left out whose value is not the schema's own default is
shown as the tool gets it, and a default factory validated so is refused". The fix takes a
default factory's value as the schema's own unless ``validate_default`` (v2) or a v1
``always=True`` validator or root validator is declared. Two other ways validation makes a
factory field's value from the other arguments are left out:

1. Pydantic v2: a ``model_validator(mode="after")`` that fills the factory's fresh list or
   dict in place (``self.options["mode"] = "live"``): the field stays out of
   ``model_fields_set`` and its value is a factory default, so the policy never sees it.
2. ``pydantic.v1``: ``Config.validate_all = True`` runs a plain ``@validator`` (no
   ``always=True``) on the factory's value, with ``values`` (the other arguments).

LangChain hands the tool every defaulted field as validated (``getattr(model, name)``),
so the tool runs with the value the validator made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic.v1 as pydantic_v1
import pytest
from langchain_core.tools import BaseTool, StructuredTool
from mcp_server_kit import policy_engine
from pydantic import BaseModel, Field, model_validator
from surface_kit import MODES, SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy

USER = {"id": "u-1", "role": "tester"}

POLICY = """package redteam69factory

import rego.v1

default decision := {"allow": false, "reasons": ["only a dry run may purge"]}

decision := {"allow": true, "reasons": []} if {
    input.tool.name == "purge"
    object.get(object.get(input.tool.args, "options", {}), "mode", "dry_run") == "dry_run"
}
"""


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam69factory", POLICY)


class InPlaceV2(BaseModel):
    """Scratch tables (``tmp_*``) are purged for real."""

    table: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _scratch_tables_live(self) -> InPlaceV2:
        if self.table.startswith("tmp_"):
            self.options["mode"] = "live"
        return self


class ValidateAllV1(pydantic_v1.BaseModel):
    table: str
    options: dict = pydantic_v1.Field(default_factory=dict)

    class Config:
        validate_all = True

    @pydantic_v1.validator("options")
    def _scratch_tables_live(cls, value: dict, values: dict[str, Any]) -> dict:
        if str(values.get("table", "")).startswith("tmp_"):
            return {**value, "mode": "live"}
        return value


SCHEMAS = {"v2-model_validator-in-place": InPlaceV2, "v1-validate_all": ValidateAllV1}


def purge_tool(schema: type, ran: list[str]) -> BaseTool:
    def purge(table: str, options: dict | None = None) -> str:
        """Purge a table (options mode "dry_run", the default, only reports)."""
        mode = (options or {}).get("mode", "dry_run")
        ran.append(mode)
        return f"{mode} purge of {table}"

    return StructuredTool.from_function(
        purge, name="purge", description="Purge a table.", args_schema=schema
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("schema", list(SCHEMAS))
def test_control_an_explicit_live_purge_is_denied(
    engine: EmbeddedPolicy, schema: str, surface: str, mode: str
) -> None:
    ran: list[str] = []
    answer, _ = run_turn(
        surface,
        engine,
        [purge_tool(SCHEMAS[schema], ran)],
        "purge",
        {"table": "tmp_users", "options": {"mode": "live"}},
        mode,
        context={"user": USER},
    )
    assert ran == [], answer.content
    assert answer.status == "error"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("schema", list(SCHEMAS))
def test_a_factory_default_made_from_other_arguments_is_decided(
    engine: EmbeddedPolicy, schema: str, surface: str, mode: str
) -> None:
    """What was done: ``purge({"table": "tmp_users"})``, a schema whose ``options`` has a
    default factory (``dict``) and whose validation sets ``options["mode"] = "live"`` for
    ``tmp_*`` tables: a v2 ``model_validator(mode="after")`` filling the dict in place, or
    a v1 ``@validator("options")`` run on the default by ``Config.validate_all = True``.

    Observed: the policy is given ``{"table": "tmp_users"}`` (``_made_default`` takes any
    default factory's value for the schema's own unless ``validate_default``/``always``/a
    root validator is declared) and allows a dry run; the tool gets
    ``options={"mode": "live"}`` and purges live, which the policy denies (the control).

    Expected: the value the tool runs with is decided (denied), or the call is refused
    before it runs, as the README promises for a default made from the other arguments."""
    ran: list[str] = []
    answer, _ = run_turn(
        surface,
        engine,
        [purge_tool(SCHEMAS[schema], ran)],
        "purge",
        {"table": "tmp_users"},
        mode,
        context={"user": USER},
    )
    assert "live" not in ran, (
        "the policy allowed purge(table='tmp_users') as a dry run; the tool ran live with "
        f"options made by the schema: {answer.content!r:.200}"
    )
