"""Red team 20: a key an MCP tool's schema does not list passes unchecked, but the server
(FastMCP, Pydantic) reads it as a field the schema lists under another name, so the policy
never sees the value the tool runs with.

``guards/json_schema_types.py`` lets a key the schema does not list through when the object's
schema has no ``additionalProperties`` (any value). Pydantic writes a model field's
*validation alias* into the JSON schema, but reads more names than that: a model with
``populate_by_name=True`` also takes the field's Python name, and a field with
``validation_alias=AliasChoices(a, b)`` takes ``b`` too while the schema names only ``a``.

Attack (real FastMCP server over stdio; the policy denies ``purgeNow: true``, the name the
schema gives the field):

* ``delete(ticket_id, options: ByName)``: ``ByName.purge`` has ``alias="purgeNow"`` and
  ``populate_by_name=True``; the model sends ``{"purge": true}``;
* ``drop(ticket_id, options: Choices)``: ``Choices.purge`` has
  ``validation_alias=AliasChoices("purgeNow", "purge_now")``; the model sends
  ``{"purge_now": true}``.

The policy sees no ``purgeNow`` and allows; the server runs ``purge=True``.

Observed on main: both attacks run with ``purge=True`` on every surface (the controls with
``purgeNow: true`` are denied).

What should happen: a key the schema does not list, in an object whose schema lists
properties and says nothing of others, is refused (Pydantic ignores a really unknown key, so
refusing it costs a well-behaved call nothing), or is decided as the field it fills.

Run as a script, this file is the MCP server (stdio): ``python this.py LOG``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mcp_server_kit import (
    SURFACES,
    policy_engine,
    ran,
    recorder,
    run_server_tool,
)
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # the file is also the MCP server: it starts without the guard
    from langchain_opa_guard import EmbeddedPolicy

POLICY = """package redteam20names

import rego.v1

deny contains "no purges" if {
	walk(input.tool.args, [path, v])
	count(path) > 0
	path[count(path) - 1] == "purgeNow"
	v == true
}

decision := {
	"allow": count(deny) == 0,
	"reasons": [{"code": "rt20", "message": m} | some m in deny],
}
"""


class ByName(BaseModel):
    """Options whose field the schema names ``purgeNow`` (its alias)."""

    model_config = ConfigDict(populate_by_name=True)

    purge: bool = Field(False, alias="purgeNow")


class Choices(BaseModel):
    """Options whose field the schema names ``purgeNow`` (the first of its aliases)."""

    purge: bool = Field(False, validation_alias=AliasChoices("purgeNow", "purge_now"))


def serve(log: Path) -> None:
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("tickets", log_level="ERROR")

    log_run = recorder(log)

    def record(tool: str, purge: Any) -> None:
        log_run(tool, purge=purge)

    @server.tool(description="Delete a ticket; options.purgeNow skips the archive.")
    def delete(ticket_id: str, options: ByName) -> str:
        record("delete", options.purge)
        return f"deleted {ticket_id}"

    @server.tool(description="Drop a ticket; options.purgeNow skips the archive.")
    def drop(ticket_id: str, options: Choices) -> str:
        record("drop", options.purge)
        return f"dropped {ticket_id}"

    server.run(transport="stdio")


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam20names", POLICY)


CONTROLS = [
    ("delete", {"ticket_id": "T-1", "options": {"purgeNow": True}}),
    ("drop", {"ticket_id": "T-1", "options": {"purgeNow": True}}),
]

ATTACKS = [
    ("delete", {"ticket_id": "T-1", "options": {"purge": True}}),
    ("drop", {"ticket_id": "T-1", "options": {"purge_now": True}}),
]


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(("tool", "args"), CONTROLS, ids=[c[0] for c in CONTROLS])
def test_control_a_purge_under_its_schema_name_is_denied(
    engine: EmbeddedPolicy, tmp_path: Path, surface: str, tool: str, args: dict[str, Any]
) -> None:
    log = tmp_path / "ran.jsonl"
    answer = run_server_tool(__file__, log, surface, engine, tool, args)
    assert ran(log) == [], answer.content


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(("tool", "args"), ATTACKS, ids=["populate-by-name", "second-alias-choice"])
def test_a_field_under_a_name_the_schema_does_not_list_is_not_run_unseen(
    engine: EmbeddedPolicy, tmp_path: Path, surface: str, tool: str, args: dict[str, Any]
) -> None:
    log = tmp_path / "ran.jsonl"
    answer = run_server_tool(__file__, log, surface, engine, tool, args)
    purged = [r for r in ran(log) if r["purge"] is True]
    assert purged == [], (
        f"the policy allowed {tool}({args!r}), where it saw no purgeNow; the server ran with "
        f"purge=True ({answer.content!r:.200})"
    )


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
