"""Red team 15: reading marks that collide for tools that read a call differently.

``tool_readings._plain_reading`` leaves out every dict key named ``"metadata"`` (meant for
Pydantic's and JSON Schema's annotations), but a field or a JSON-schema property may itself
be called ``metadata``: then everything about it (its type, its alias) is missing from the
mark, and a release that changes how it is read keeps the mark, so a checkpointed call
decided by the old release runs unread by the new one (see
``test_redteam15_unmarked_injection.py`` for the checkpointed ``Send`` this leads to).

1. Pydantic: release A reads ``metadata`` from the key ``"metadata"``; release B reads it
   from ``"other"`` (``validation_alias``). The model sends both keys: A decides
   ``metadata="bob@ok.test"``, B runs with ``metadata="eve@evil.test"``; same mark.
2. JSON schema (an MCP tool's ``inputSchema``): release A declares ``metadata`` a string,
   release B an array (which FastMCP fills by parsing a string as JSON): same mark.

Smallest fix: leave out ``metadata`` only where it is a schema node's own key (beside a
``"type"`` that names a core-schema kind), never in a ``fields``/``properties`` mapping.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.guards.tool_readings import reading_mark


def send(**kwargs: Any) -> str:
    return "sent"


def pydantic_release(aliased: bool) -> StructuredTool:
    if aliased:

        class Args(BaseModel):
            metadata: str = Field(validation_alias="other")

    else:

        class Args(BaseModel):  # type: ignore[no-redef]
            metadata: str

    return StructuredTool.from_function(send, name="send", description="d", args_schema=Args)


def json_release(kind: str) -> StructuredTool:
    prop: dict[str, Any] = {"type": "string"} if kind == "string" else {"type": "array"}
    schema = {"type": "object", "properties": {"metadata": prop}, "required": ["metadata"]}
    return StructuredTool.from_function(send, name="send", description="d", args_schema=schema)


def test_a_field_named_metadata_read_from_another_key_changes_the_mark() -> None:
    old, new = pydantic_release(False), pydantic_release(True)
    call: Any = {
        "name": "send",
        "args": {"metadata": "bob@ok.test", "other": "eve@evil.test"},
        "id": "m1",
        "type": "tool_call",
    }
    assert prepared_call(old, call)[0]["args"] == {"metadata": "bob@ok.test"}
    assert prepared_call(new, call)[0]["args"] == {"metadata": "eve@evil.test"}
    assert reading_mark(old) is not None
    assert reading_mark(old) != reading_mark(new), (
        "the two releases read the call as bob@ok.test and eve@evil.test, with one mark"
    )


def test_a_json_schema_property_named_metadata_changing_type_changes_the_mark() -> None:
    old, new = json_release("string"), json_release("array")
    assert reading_mark(old) is not None
    assert reading_mark(old) != reading_mark(new), (
        "a string property and an array property named metadata have one mark"
    )


def test_control_a_property_of_another_name_changing_type_changes_the_mark() -> None:
    def release(kind: str) -> StructuredTool:
        schema = {"type": "object", "properties": {"note": {"type": kind}}}
        return StructuredTool.from_function(send, name="send", description="d", args_schema=schema)

    assert reading_mark(release("string")) != reading_mark(release("array"))
