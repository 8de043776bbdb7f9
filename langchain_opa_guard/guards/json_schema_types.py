"""Whether a call's arguments already have the JSON types a JSON-schema tool declares.

A tool whose ``args_schema`` is a JSON schema (an MCP tool's ``inputSchema``) is decided on
the model's arguments as they are, and its server reads them with its own validation: a
value of another type may be read its own way (FastMCP parses a string sent for a list or an
object as JSON, and reads ``"yes"`` as ``True`` for a boolean), so the policy would decide
the text while the tool runs the value. :func:`json_schema_problem` names the arguments that
do not already have a declared type, following the schema as a validator would: local
``$ref``\\ s, ``allOf``/``anyOf``/``oneOf`` (an option counts only where the value is valid
for it as it is), ``properties`` (a key a schema that lists its properties does not list is
refused unless ``additionalProperties`` takes it), ``items`` and ``prefixItems``. A part of
the schema it cannot follow (a ``$ref`` to another document, ``patternProperties``, ``not``,
``if``) makes a value there unreadable, so the call is refused rather than decided on text
the server may read otherwise.

Example:
    ```python
    schema = {"type": "object", "properties": {"force": {"type": "boolean"}}}
    json_schema_problem(schema, {"force": "yes"})
    # "the arguments do not have the types the tool's schema declares: force"
    ```
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["json_schema_problem"]

_JSON_TYPES: dict[type, tuple[str, ...]] = {
    bool: ("boolean",),
    int: ("integer", "number"),
    float: ("number",),
    str: ("string",),
    list: ("array",),
    dict: ("object",),
    type(None): ("null",),
}

# Keywords that change which values a schema takes in ways not followed here.
_UNFOLLOWED = ("patternProperties", "not", "if", "then", "else", "dependentSchemas", "$dynamicRef")


def json_schema_problem(schema: Mapping[str, Any], args: Mapping[str, Any]) -> str | None:
    """Why arguments do not already have the JSON types a JSON-schema ``args_schema``
    declares (or the schema cannot be followed where they sit), or ``None``. Keys an object
    schema does not list are refused unless it takes others, for every such tool: one that
    hands them to a server (an MCP tool, wrapped or not) would let it read them as listed
    fields under other names."""
    wrong = sorted(
        key
        for key, value in args.items()
        if not _fits(schema, _member(schema, key), value)
        or _parsed_as_json(schema, _member(schema, key), value)
    )
    if not wrong:
        return None
    return "the arguments do not have the types the tool's schema declares: " + ", ".join(wrong[:8])


def _member(node: Any, key: str) -> Any:
    """The schema of an object's member ``key``: its property, else
    ``additionalProperties``. A key an object schema that lists its properties does not
    list is refused unless the schema takes others: a server may read it as a listed field
    under another name (Pydantic's ``populate_by_name``, a second ``AliasChoices`` name)
    that the policy never saw."""
    if not isinstance(node, Mapping):
        return True
    properties = node.get("properties")
    if isinstance(properties, Mapping) and key in properties:
        return properties[key]
    return node.get("additionalProperties", not isinstance(properties, Mapping))


def _resolved(root: Mapping[str, Any], node: Any) -> Any:
    """``node`` with a local ``$ref`` (``#/$defs/X``, ``#/definitions/X``) followed;
    ``False`` (nothing fits) for a reference that cannot be followed."""
    seen = 0
    while isinstance(node, Mapping) and "$ref" in node:
        ref = node["$ref"]
        seen += 1
        if not isinstance(ref, str) or not ref.startswith("#/") or seen > 32:
            return False
        target: Any = root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or part not in target:
                return False
            target = target[part]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        node = {"allOf": [target, rest]} if rest else target
    return node


def _fits(root: Mapping[str, Any], node: Any, value: Any) -> bool:
    """Whether ``value`` already has the types ``node`` (a schema inside ``root``) takes."""
    node = _resolved(root, node)
    if node is True or node is None:
        return True
    if node is False or not isinstance(node, Mapping):
        return False
    if any(key in node for key in _UNFOLLOWED):
        return False
    every = node.get("allOf")
    if isinstance(every, list) and not all(_fits(root, part, value) for part in every):
        return False
    options = node.get("anyOf", node.get("oneOf"))
    if isinstance(options, list):
        # A server reads a value with the option it validates against as it is (Pydantic's
        # smart union), else with one that takes it by coercion ("yes" as true). So only the
        # options the value is valid for as it is count, all of them must take its types,
        # and a value valid for none is refused.
        chosen = [
            part
            for part in options
            if _valid(root, part, value)
            and not (isinstance(value, str) and _checked_text(root, part))
        ]
        if not chosen or not all(_fits(root, part, value) for part in chosen):
            return False
    kind = node.get("type")
    if kind is not None:
        allowed = (
            {kind} if isinstance(kind, str) else set(kind) if isinstance(kind, list) else set()
        )
        kinds = _JSON_TYPES.get(type(value), ())
        if isinstance(value, float) and value.is_integer():
            kinds = ("number", "integer")
        if not allowed.intersection(kinds):
            return False
    if isinstance(value, list):
        return _items_fit(root, node, value)
    if isinstance(value, dict):
        return all(_fits(root, _member(node, str(k)), v) for k, v in value.items())
    return True


def _items_fit(root: Mapping[str, Any], node: Mapping[str, Any], value: list[Any]) -> bool:
    prefix = node.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    rest = node.get("items", True)
    if isinstance(rest, list):  # draft 7's tuple form
        prefix, rest = rest, node.get("additionalItems", True)
    for index, item in enumerate(value):
        part = prefix[index] if index < len(prefix) else rest
        if not _fits(root, part, item):
            return False
    return True


def _valid(root: Mapping[str, Any], option: Any, value: Any) -> bool:
    """Whether ``value`` is valid for ``option`` (a schema inside ``root``) as it is, by
    JSON Schema's own rules (types without coercion, ``const``, ``enum``, bounds,
    ``required``; ``jsonschema``, which the MCP SDK depends on). Without ``jsonschema`` no
    option counts: the value is refused."""
    try:
        validators = importlib.import_module("jsonschema")
    except ImportError:  # pragma: no cover - installed with the MCP SDK
        return False
    if not isinstance(option, Mapping):
        return option is True
    document = {k: root[k] for k in ("$defs", "definitions") if k in root}
    document.update(option)
    try:
        return bool(validators.Draft202012Validator(document).is_valid(value))
    except Exception:  # noqa: BLE001 - a schema it cannot read: no option counts
        return False


def _parsed_as_json(root: Mapping[str, Any], node: Any, value: Any) -> bool:
    """Whether a server would read an argument's text as the JSON it holds: FastMCP parses a
    string sent for any parameter that is not plainly text (``list[str] | str``,
    ``str | None``) and uses what it parses to unless that is text or a number, so
    ``'["x"]'`` runs as a list and ``"null"`` as ``None``."""
    if not isinstance(value, str):
        return False
    node = _resolved(root, node)
    plain = (
        isinstance(node, Mapping)
        and node.get("type") == "string"
        and not any(k in node for k in ("anyOf", "oneOf", "allOf", "format", "pattern"))
    )
    if plain:
        return False
    try:
        parsed = json.loads(value)
    except ValueError:
        return False
    return not isinstance(parsed, (str, int, float))


def _checked_text(root: Mapping[str, Any], option: Any) -> bool:
    """Whether a string option checks its text in a way not followed here (a ``format``,
    which JSON Schema validators skip, or a ``pattern``, whose regex dialect differs): a
    string valid for it may be refused by the server, which then tries another option."""
    option = _resolved(root, option)
    return isinstance(option, Mapping) and ("format" in option or "pattern" in option)
