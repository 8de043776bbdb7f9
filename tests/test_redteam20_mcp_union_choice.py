"""Red team 20: an MCP argument under ``anyOf``/``oneOf`` passes when its JSON type fits *one*
option, although the server (FastMCP, Pydantic in lax mode) reads it with *another*, so the
policy decides a string while the tool runs ``True``.

``guards/json_schema_types.py`` follows a schema's combinators by type only: for an
``anyOf``/``oneOf`` it asks whether the value has the ``type`` of some option, and ignores what
else the option demands (``const``/``enum``, ``maxLength``/``pattern``, ``required``, a
discriminator). Pydantic does not pick the option by type: an option the value fails (a
``Literal["ask"]`` for ``"yes"``, a ``str`` of at most 2 characters for ``"yes"``, a model whose
required fields are missing, the option a discriminator names) is skipped and the next one reads
the value in lax mode, where ``"yes"`` is ``True`` for a ``bool``.

Attack (real FastMCP server over stdio; the policy denies any ``force`` that is ``true``):

* ``delete(ticket_id, force: bool | Literal["ask"])`` (``{"const": "ask", "type": "string"}``):
  ``force="yes"`` fits the string option; the server runs ``force=True``;
* ``trim(ticket_id, force: Annotated[str, Field(max_length=2)] | bool)``: same with
  ``maxLength``;
* ``apply(ticket_id, action: Archive | Erase)`` discriminated by ``kind`` (``oneOf``):
  ``{"kind": "erase", "force": "yes"}`` fits ``Archive`` (whose ``force`` is a string, and
  whose ``kind`` const is ignored); the server picks ``Erase`` and runs ``force=True``;
* ``move(ticket_id, options: Note | Opts)`` (``anyOf`` of two models): ``{"force": "yes"}``
  fits ``Note`` (``force`` is an extra key there, and ``Note``'s required ``note`` is
  ignored); the server picks ``Opts`` and runs ``force=True``.

Observed on main: the policy allows each attack and the server runs with ``force=True`` on
every surface (the controls with ``force: true`` are denied).

What should happen: a value under ``anyOf``/``oneOf`` passes only if it fits an option as a
validator would (``const``, ``enum``, string bounds, ``required``, the discriminator), or is
refused when the options it does not fit by type alone could read it another way.

Run as a script, this file is the MCP server (stdio): ``python this.py LOG``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pytest
from mcp_server_kit import (
    SURFACES,
    policy_engine,
    ran,
    recorder,
    run_server_tool,
)
from pydantic import BaseModel, Field

if TYPE_CHECKING:  # the file is also the MCP server: it starts without the guard
    from langchain_opa_guard import EmbeddedPolicy

POLICY = """package redteam20mcp

import rego.v1

deny contains "no forced deletes" if {
	walk(input.tool.args, [path, v])
	count(path) > 0
	path[count(path) - 1] == "force"
	v == true
}

decision := {
	"allow": count(deny) == 0,
	"reasons": [{"code": "rt20", "message": m} | some m in deny],
}
"""


class Archive(BaseModel):
    """Archive a ticket; ``force`` is a free-text note here."""

    kind: Literal["archive"]
    force: str


class Erase(BaseModel):
    """Erase a ticket; ``force`` skips the archive."""

    kind: Literal["erase"]
    force: bool


class Note(BaseModel):
    """A move with a note (both fields required)."""

    note: str
    priority: int


class Opts(BaseModel):
    """A move with options."""

    force: bool


def serve(log: Path) -> None:
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("tickets", log_level="ERROR")

    log_run = recorder(log)

    def record(tool: str, force: Any) -> None:
        log_run(tool, force=force)

    @server.tool(description="Delete a ticket; force=true skips the archive, 'ask' prompts.")
    def delete(ticket_id: str, force: bool | Literal["ask"] = False) -> str:
        record("delete", force)
        return f"deleted {ticket_id}"

    @server.tool(description="Trim a ticket; force is a 2-letter code or a boolean.")
    def trim(ticket_id: str, force: Annotated[str, Field(max_length=2)] | bool = False) -> str:
        record("trim", force)
        return f"trimmed {ticket_id}"

    @server.tool(description="Apply an action to a ticket.")
    def apply(
        ticket_id: str, action: Annotated[Archive | Erase, Field(discriminator="kind")]
    ) -> str:
        record("apply", action.force)
        return f"applied {action.kind} to {ticket_id}"

    @server.tool(description="Move a ticket, with a note or with options.")
    def move(ticket_id: str, options: Note | Opts) -> str:
        record("move", getattr(options, "force", None))
        return f"moved {ticket_id}"

    server.run(transport="stdio")


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam20mcp", POLICY)


CONTROLS = [
    ("delete", {"ticket_id": "T-1", "force": True}),
    ("trim", {"ticket_id": "T-1", "force": True}),
    ("apply", {"ticket_id": "T-1", "action": {"kind": "erase", "force": True}}),
    ("move", {"ticket_id": "T-1", "options": {"force": True}}),
]

ATTACKS = [
    ("delete", {"ticket_id": "T-1", "force": "yes"}),
    ("trim", {"ticket_id": "T-1", "force": "yes"}),
    ("apply", {"ticket_id": "T-1", "action": {"kind": "erase", "force": "yes"}}),
    ("move", {"ticket_id": "T-1", "options": {"force": "yes"}}),
]


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(("tool", "args"), CONTROLS, ids=[c[0] for c in CONTROLS])
def test_control_a_forced_call_is_denied(
    engine: EmbeddedPolicy, tmp_path: Path, surface: str, tool: str, args: dict[str, Any]
) -> None:
    log = tmp_path / "ran.jsonl"
    answer = run_server_tool(__file__, log, surface, engine, tool, args)
    assert ran(log) == [], answer.content


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(
    ("tool", "args"),
    ATTACKS,
    ids=["const-option", "maxlength-option", "discriminated-oneof", "required-ignored"],
)
def test_a_union_value_is_decided_as_the_option_the_server_picks(
    engine: EmbeddedPolicy, tmp_path: Path, surface: str, tool: str, args: dict[str, Any]
) -> None:
    log = tmp_path / "ran.jsonl"
    answer = run_server_tool(__file__, log, surface, engine, tool, args)
    forced = [r for r in ran(log) if r["force"] is True]
    assert forced == [], (
        f"the policy allowed {tool}({args!r}), where force is not true to it; the server ran "
        f"with force=True ({answer.content!r:.200})"
    )


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
