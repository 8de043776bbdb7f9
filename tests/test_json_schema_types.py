"""The JSON types a JSON-schema tool's arguments must already have, followed as a validator
would follow the schema (``$ref``, combinators, members, items); what cannot be followed is
refused."""

from __future__ import annotations

from typing import Any

import pytest

from langchain_opa_guard.guards.json_schema_types import json_schema_problem

DEFS = {
    "type": "object",
    "$defs": {
        "Options": {"type": "object", "properties": {"force": {"type": "boolean"}}},
    },
    "properties": {
        "options": {"$ref": "#/$defs/Options"},
        "maybe": {"anyOf": [{"$ref": "#/$defs/Options"}, {"type": "null"}]},
        "both": {"allOf": [{"$ref": "#/$defs/Options"}, {"required": ["force"]}]},
        "flags": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "free": {},
        "closed": {"type": "object", "properties": {}, "additionalProperties": False},
        "pattern": {"type": "object", "patternProperties": {"^x": {"type": "boolean"}}},
        "elsewhere": {"$ref": "https://example.test/schema.json"},
    },
}


@pytest.mark.parametrize(
    "args",
    [
        {"options": {"force": True}},
        {"maybe": None},
        {"maybe": {"force": False}},
        {"both": {"force": True}},
        {"flags": {"a": True, "b": False}},
        {"pair": [1, "a"]},
        {"pair": [1.0, "a"]},
        {"tags": []},
        {"free": "anything"},
        {"closed": {}},
        {"free": {"any": ["thing"]}},
    ],
)
def test_values_of_the_declared_types_pass(args: dict[str, Any]) -> None:
    assert json_schema_problem(DEFS, args) is None


@pytest.mark.parametrize(
    "args",
    [
        {"options": {"force": "yes"}},
        {"options": '{"force": true}'},
        {"maybe": {"force": "yes"}},
        {"maybe": "null"},
        {"both": {"force": 1}},
        {"flags": {"a": "yes"}},
        {"pair": ["1", "a"]},
        {"tags": ["a", 2]},
        {"closed": {"x": 1}},
        {"pattern": {"x": True}},  # patternProperties is not followed: refused
        {"elsewhere": {"force": True}},  # another document: refused
        {"unknown": "x"},  # a key the schema does not list (a server may read it as a field)
        {"options": {"force_now": True}},
        {"maybe": {"force": "yes", "x": 1}},
    ],
)
def test_values_of_other_types_or_unfollowed_schemas_are_named(args: dict[str, Any]) -> None:
    problem = json_schema_problem(DEFS, args)
    assert problem is not None and problem.endswith(next(iter(args))), problem


def test_a_reference_loop_is_refused_not_followed_forever() -> None:
    schema = {"$defs": {"A": {"$ref": "#/$defs/A"}}, "properties": {"a": {"$ref": "#/$defs/A"}}}
    assert json_schema_problem(schema, {"a": 1}) is not None
