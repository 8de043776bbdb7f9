"""Red team 67: arguments a tool's Pydantic schema hands the tool that are not those the
policy decided.

The guard decides a call "as the tool will read it" (README, "Add the guard to a graph"):
the model's arguments through the tool's schema, "defaults the model left out are not
added", and a schema that makes what the tool is handed its own way ("a default factory
that reads the other arguments", a model serializer, a computed field) is denied before the
policy is asked. LangChain's ``BaseTool._parse_input`` hands the tool every field of the
validated model that the model sent *and every field with a default*, each as
``getattr(model, name)``; and ``BaseTool._to_args_and_kwargs`` hands a schema that declares
no fields nothing at all (``return (), {}``), whatever the model sent.

Two ways the tool then receives other arguments than the policy decided, on every wiring
(guard node + ``GuardedToolNode``, ``ToolCallGuard``, ``OPAGuardMiddleware``,
``guard_tools``), sync and async, LangChain 1.2 and 1.8 alike:

1. A default made from the other arguments by validation rather than by a default factory:
   a Pydantic v2 ``field_validator`` on a field with ``validate_default=True`` that reads
   ``info.data``, a Pydantic v1 ``@validator(..., always=True)`` that reads ``values``, or a
   v1 ``@root_validator`` that writes a defaulted field into ``values``. The policy's view
   leaves the field out (the model did not set it: it is not in ``model_fields_set``), so
   the policy decides on the tool's plain default, and the tool runs with the derived value.
   The README refuses the same thing done with ``Field(default_factory=lambda data: ...)``.

2. A schema that declares no fields but keeps extras (``extra="allow"``, v2 or v1) for a
   function taking ``**options``: the policy decides the model's extras
   (``input.tool.args.dry_run == true``), and LangChain calls the function with no
   arguments at all, so it runs with its own defaults (a live run).

Each test asserts the correct behaviour: the call runs as decided, or it is refused before
it runs. The controls show that the value that actually ran, sent explicitly, is denied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic.v1 as pydantic_v1
import pytest
from langchain_core.tools import BaseTool, StructuredTool
from mcp_server_kit import policy_engine
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from surface_kit import SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy

USER = {"id": "u-1", "role": "tester"}
MODES = ["invoke", "ainvoke"]

# purge is allowed only as a dry run: its ``mode`` (the tool's default "dry_run" when the
# arguments leave it out) or, for the options tool, ``dry_run: true``.
POLICY = """package redteam67schema

import rego.v1

default decision := {"allow": false, "reasons": ["only a dry run may purge"]}

decision := {"allow": true, "reasons": []} if {
    input.tool.name == "purge"
    object.get(input.tool.args, "mode", "dry_run") == "dry_run"
}

decision := {"allow": true, "reasons": []} if {
    input.tool.name == "purge_options"
    input.tool.args.dry_run == true
}
"""


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam67schema", POLICY)


# 1. A default derived from the other arguments by validation.


class DerivedV2(BaseModel):
    """Scratch tables (``tmp_*``) are purged for real; anything else is a dry run."""

    table: str
    mode: str = "dry_run"

    @field_validator("mode", mode="after")
    @classmethod
    def _scratch_tables_live(cls, value: str, info: ValidationInfo) -> str:
        return "live" if str(info.data.get("table", "")).startswith("tmp_") else value

    model_config = ConfigDict(validate_default=True)


class DerivedV1Always(pydantic_v1.BaseModel):
    table: str
    mode: str = "dry_run"

    @pydantic_v1.validator("mode", always=True)
    def _scratch_tables_live(cls, value: str, values: dict[str, Any]) -> str:
        return "live" if str(values.get("table", "")).startswith("tmp_") else value


class DerivedV1Root(pydantic_v1.BaseModel):
    table: str
    mode: str = "dry_run"

    @pydantic_v1.root_validator(skip_on_failure=True)
    def _scratch_tables_live(cls, values: dict[str, Any]) -> dict[str, Any]:
        if str(values.get("table", "")).startswith("tmp_"):
            values["mode"] = "live"
        return values


SCHEMAS = {
    "v2-validate_default": DerivedV2,
    "v1-validator-always": DerivedV1Always,
    "v1-root_validator": DerivedV1Root,
}


def purge_tool(schema: type, ran: list[str]) -> BaseTool:
    def purge(table: str, mode: str = "dry_run") -> str:
        """Purge a table (mode "dry_run" only reports what it would do)."""
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
        {"table": "tmp_users", "mode": "live"},
        mode,
        context={"user": USER},
    )
    assert ran == [], answer.content
    assert answer.status == "error"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("schema", list(SCHEMAS))
def test_a_default_derived_from_other_arguments_is_decided(
    engine: EmbeddedPolicy, schema: str, surface: str, mode: str
) -> None:
    """What was done: ``purge({"table": "tmp_users"})`` with a schema whose ``mode`` defaults
    to "dry_run" and is set to "live" by a validator for ``tmp_*`` tables (v2
    ``validate_default``, v1 ``always=True``, v1 ``root_validator``).

    Observed: the policy is given ``{"table": "tmp_users"}`` (no ``mode``: the model left it
    out), reads the default dry run and allows; LangChain hands the tool every defaulted
    field as validated, so the tool runs ``mode="live"``, a purge the policy denies (the
    control).

    Expected: the value the tool runs with is decided (``mode: "live"``, denied), or the
    call is refused before it runs, as the README refuses a default factory that reads the
    other arguments."""
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
        "the policy allowed purge(table='tmp_users') as a dry run; the tool ran "
        f"mode='live', derived by the schema from the table: {answer.content!r:.200}"
    )


# 2. A schema without declared fields that keeps extras.


class OptionsV2(BaseModel):
    model_config = ConfigDict(extra="allow")


class OptionsV1(pydantic_v1.BaseModel):
    class Config:
        extra = pydantic_v1.Extra.allow


OPTION_SCHEMAS = {"v2-extra-allow": OptionsV2, "v1-extra-allow": OptionsV1}


def options_tool(schema: type, ran: list[Any]) -> BaseTool:
    def purge_options(**options: Any) -> str:
        """Purge scratch data; ``dry_run`` (default false) only reports what it would do."""
        dry = bool(options.get("dry_run", False))
        ran.append("dry_run" if dry else "live")
        return "dry run" if dry else "purged"

    return StructuredTool.from_function(
        purge_options, name="purge_options", description="Purge.", args_schema=schema
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("schema", list(OPTION_SCHEMAS))
def test_control_options_without_dry_run_are_denied(
    engine: EmbeddedPolicy, schema: str, surface: str, mode: str
) -> None:
    ran: list[Any] = []
    answer, _ = run_turn(
        surface,
        engine,
        [options_tool(OPTION_SCHEMAS[schema], ran)],
        "purge_options",
        {"dry_run": False},
        mode,
        context={"user": USER},
    )
    assert ran == [], answer.content
    assert answer.status == "error"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("schema", list(OPTION_SCHEMAS))
def test_extras_of_a_schema_without_fields_reach_the_tool(
    engine: EmbeddedPolicy, schema: str, surface: str, mode: str
) -> None:
    """What was done: ``purge_options({"dry_run": true})``, a ``**options`` function whose
    ``args_schema`` declares no fields and keeps extras (``extra="allow"``).

    Observed: the policy is given ``{"dry_run": true}`` and allows the dry run; LangChain's
    ``_to_args_and_kwargs`` calls a tool whose schema has no fields with no arguments
    (``return (), {}``), so the function runs with ``dry_run`` unset: a live purge, which
    the policy denies (the control).

    Expected: the call runs with the arguments decided, or it is refused before it runs
    (the policy would decide values the tool never gets)."""
    ran: list[Any] = []
    answer, _ = run_turn(
        surface,
        engine,
        [options_tool(OPTION_SCHEMAS[schema], ran)],
        "purge_options",
        {"dry_run": True},
        mode,
        context={"user": USER},
    )
    assert "live" not in ran, (
        "the policy allowed purge_options(dry_run=true); the tool was called without "
        f"arguments and purged live: {answer.content!r:.200}"
    )
