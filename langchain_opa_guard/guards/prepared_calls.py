"""A tool call as it will run: its arguments through the tool's own schema.

The policy decides on the arguments that will run, so every guard prepares each call first
(:func:`prepared_call`): values coerced and normalised by the tool's schema and validators
(a Pydantic v2 or v1 schema, read as LangChain reads it), keys the tool does not take
dropped, and the arguments LangGraph and LangChain inject (state, store, call id, runtime,
any ``InjectedToolArg``) kept apart from the model's (:mod:`.injections`). Where the tool
runs, the call is read again (:mod:`.decided_views`). Where the guard changed a call (a
schema coercion, a policy rewrite, a reviewer's edit), :func:`message_as_run` gives the
model's message holding the calls as they run.

Example:
    ```python
    call, problem = prepared_call(tool, {"name": "refund", "args": {"amount": "50"}, "id": "c1"})
    # call["args"] == {"amount": 50} for an integer field; problem names failing fields
    ```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import pydantic.v1 as pydantic_v1
from langchain_core.messages import AIMessage, ToolCall
from langchain_core.tools import BaseTool, Tool
from pydantic import BaseModel, ValidationError, create_model

from langchain_opa_guard.engines.engine import same_json
from langchain_opa_guard.guards.injections import executed_injections, injected_fields
from langchain_opa_guard.guards.json_schema_types import json_schema_problem
from langchain_opa_guard.guards.plain_messages import content_without_calls, plain_message
from langchain_opa_guard.guards.run_parameters import run_parameters
from langchain_opa_guard.guards.schema_views import UnshowableArguments, schema_view
from langchain_opa_guard.guards.tool_readings import reads_own_way
from langchain_opa_guard.plain_json import arguments_problem

__all__ = [
    "changed_keys",
    "message_as_run",
    "SINGLE_INPUT",
    "prepared_call",
    "single_input_name",
]

SINGLE_INPUT = "tool_input"
"""The name under which the one value of a single-input ``Tool`` without a schema is
decided: the argument ``Tool.args`` shows (the model may send it under any key, such as
``__arg1``; the tool runs with the value whatever its key)."""


# By schema class and its injected fields: as many as the application's tools define.
_SCHEMAS: dict[tuple[type, frozenset[str]], type | None] = {}

_UNREADABLE = "the tool's argument schema cannot be checked before the call runs"


def _decision_schema(full: type, hidden: frozenset[str]) -> type | None:
    """The tool's own argument schema (Pydantic v2 or v1), validators and config included,
    with the injected arguments made optional: what the tool will validate, minus what the
    model never sends; ``None`` when it cannot be built (the call is then refused)."""
    key = (full, hidden)
    if key in _SCHEMAS:
        return _SCHEMAS[key]
    schema: type | None = None
    try:
        if issubclass(full, BaseModel):
            optional = {k: (Any, None) for k in full.model_fields if k in hidden}
            schema = (
                create_model(  # type: ignore[call-overload]
                    f"{full.__name__}Decided", __base__=full, **optional
                )
                if optional
                else full
            )
        elif issubclass(full, pydantic_v1.BaseModel):
            optional = {k: (Any, None) for k in full.__fields__ if k in hidden}
            schema = (
                pydantic_v1.create_model(  # type: ignore[call-overload]
                    f"{full.__name__}Decided", __base__=full, **optional
                )
                if optional
                else full
            )
    except Exception:  # noqa: BLE001 - an unusual schema: refused, never decided raw
        schema = None
    _SCHEMAS[key] = schema
    return schema


def _injected_aliases(full: type, hidden: frozenset[str]) -> set[str]:
    """Other names under which the model could set an injected field (its aliases)."""
    found: set[str] = set()
    if issubclass(full, BaseModel):
        for name in hidden:
            info = full.model_fields.get(name)
            if info is None:
                continue
            for alias in (info.alias, info.validation_alias):
                if isinstance(alias, str):
                    found.add(alias)
                elif alias is not None:  # AliasChoices / AliasPath: their first keys
                    choices = getattr(alias, "choices", None) or [alias]
                    for choice in choices:
                        path = getattr(choice, "path", [choice])
                        if path and isinstance(path[0], str):
                            found.add(path[0])
    elif issubclass(full, pydantic_v1.BaseModel):
        for name in hidden:
            field = full.__fields__.get(name)
            if field is not None and isinstance(field.alias, str):
                found.add(field.alias)
    return found - hidden


def single_input_name(tool: BaseTool) -> str | None:
    """The name under which a tool that runs with one value, whatever key the model sent it
    under, is decided; ``None`` for a tool that reads its arguments by name.

    LangChain's ``Tool`` (``Tool(name=..., func=...)``, ``Tool.from_function``) hands its
    function the single value of its input (``Tool._to_args_and_kwargs``): with a Pydantic
    ``args_schema`` that value is the schema's field, validated, so it is decided through
    the schema like any tool's; without a schema, or with a JSON-schema dict (which LangChain
    does not validate), the value runs whatever its key (``{"url": ...}``, ``{"__arg1": ...}``),
    so it is decided under the one name the tool shows the model: :data:`SINGLE_INPUT`, or the
    JSON schema's one property (``""`` when that schema names no single property: the
    call is then refused, the tool's reading being ambiguous).

    Example:
        ```python
        single_input_name(Tool(name="post", func=post, description="POST"))  # "tool_input"
        ```
    """
    if not isinstance(tool, Tool) or isinstance(tool.args_schema, type):
        return None
    full = tool.args_schema
    if full is None:
        return SINGLE_INPUT
    properties = full.get("properties") if isinstance(full, Mapping) else None
    if isinstance(properties, Mapping) and len(properties) == 1:
        name = next(iter(properties))
        if isinstance(name, str) and name:
            return name
    return ""


def _single_input_view(name: str, args: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A single-input tool's arguments as it reads them: its one value, under ``name``."""
    if not name:
        return dict(args), (
            "the tool runs with a single value, and its argument schema does not name one argument"
        )
    if len(args) != 1:
        given = "none" if not args else f"{len(args)} arguments"
        return dict(args), f"the tool takes a single argument ({name}), and the call gives {given}"
    return {name: next(iter(args.values()))}, None


def prepared_call(tool: BaseTool | None, call: ToolCall) -> tuple[ToolCall, str | None]:
    """The call as its tool will read it, for the policy to decide on; or why it cannot run.

    The arguments go through the tool's own schema as LangChain validates it (a Pydantic v2
    model, or a ``pydantic.v1`` one with ``parse_obj``), its validators included (``"5000"``
    becomes ``5000`` for an integer field, a validator that normalises an address runs,
    keys the tool does not take are dropped), so the policy decides on what will run. The
    call itself still runs with the model's arguments, which the tool validates the same
    way: a validator is applied to the model's value, never to its own output (one that
    decodes a path would otherwise decode it twice). Defaults the model left out are not
    added: they are the tool's, not the model's. Arguments keep the names the model sees in
    the tool's schema (an alias where a field has one), so a field sent twice (by name and
    by alias) is decided once, as the tool will read it. Only the arguments LangGraph and
    LangChain inject are left out (:func:`~.injections.injected_fields`); a model's value under an
    injected field's alias, or a schema that cannot be read faithfully (a tool that parses
    its input its own way, an ``args_schema`` of another kind), is refused. A tool with a
    JSON-schema ``args_schema`` or none (its arguments reach its function by name, as they
    are) is decided on the model's arguments; LangChain's single-input ``Tool`` without a
    Pydantic schema runs with its one value whatever its key, so that value is decided
    under the name the tool shows (:func:`single_input_name`, ``{"tool_input": value}``),
    and a call giving it several values or none is refused. So is a call whose arguments
    nest deeper than the policy input holds (:data:`~langchain_opa_guard.plain_json.MAX_DEPTH`
    levels): the policy would see them cut off. The reason names the fields that failed,
    never their values.
    """
    args = call.get("args")
    if not isinstance(args, Mapping):
        return call, None
    too_deep = arguments_problem(args)
    if too_deep is not None:
        return call, too_deep
    if tool is None:
        return call, None
    full = tool.args_schema
    if reads_own_way(tool):
        return call, "the tool reads its arguments its own way, so they cannot be checked"
    if filled := _filled_by_langchain(tool, full, args):
        return call, _FILLED + ", ".join(filled[:8])
    single = single_input_name(tool)
    if single is not None:
        one, problem = _single_input_view(single, args)
        if problem is not None:
            return call, problem
        return (call if same_json(one, args) else cast(ToolCall, {**call, "args": one})), None
    if full is None or isinstance(full, dict):
        # The arguments reach the tool as they are, but for those the application and
        # LangGraph supply (an MCP tool's ``runtime``): the model's values for those never do.
        dropped = executed_injections(tool)
        if not dropped.isdisjoint(args):
            call = cast(
                ToolCall, {**call, "args": {k: v for k, v in args.items() if k not in dropped}}
            )
        return call, (json_schema_problem(full, call["args"]) if full is not None else None)
    if not isinstance(full, type):
        return call, _UNREADABLE
    if not _declares_fields(full):
        # LangChain calls a tool whose schema declares no fields with no arguments at all.
        return (cast(ToolCall, {**call, "args": {}}) if args else call), None
    hidden = injected_fields(tool)
    forged = sorted(_injected_aliases(full, hidden) & set(args))
    if forged:
        return call, "the arguments set what the application supplies: " + ", ".join(forged[:8])
    schema = _decision_schema(full, hidden)
    if schema is None:
        return call, _UNREADABLE
    given = {k: v for k, v in args.items() if k not in hidden}
    try:
        view = schema_view(schema, given, hidden)
    except UnshowableArguments as exc:
        return call, str(exc)
    except (ValidationError, pydantic_v1.ValidationError) as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "(arguments)" for e in exc.errors()})
        return call, "the arguments do not match the tool's schema: " + ", ".join(fields[:8])
    except Exception:  # noqa: BLE001 - a validator of the tool's own raised
        return call, "the arguments do not match the tool's schema"
    if filled := _filled_by_langchain(tool, full, view):
        return call, _FILLED + ", ".join(filled[:8])
    if same_json(view, args):  # equal as JSON, types included (True == 1 in Python)
        return call, None
    too_deep = arguments_problem(view)
    if too_deep is not None:
        return call, too_deep
    return cast(ToolCall, {**call, "args": view}), None


def _declares_fields(full: type) -> bool:
    """Whether a Pydantic schema declares fields (anything else counts as declaring some)."""
    if issubclass(full, BaseModel):
        return bool(full.model_fields)
    if issubclass(full, pydantic_v1.BaseModel):
        return bool(full.__fields__)
    return True


_FILLED = (
    "the arguments set what LangChain fills in itself when the tool runs (the tool never "
    "gets them): "
)


def _filled_by_langchain(tool: BaseTool, full: Any, args: Mapping[str, Any]) -> list[str]:
    """The arguments of ``args`` (the model's, or as the tool's schema reads them) that the
    tool's run overwrites with its own (:func:`~.run_parameters.run_parameters`): by key, or
    for a Pydantic schema by the field a key stands for (an alias)."""
    taken = run_parameters(tool)
    if not taken:
        return []
    filled = set(args) & taken
    if isinstance(full, type) and issubclass(full, BaseModel):
        for name, info in full.model_fields.items():
            if name in taken and (name in args or info.alias in args):
                filled.add(name)
    return sorted(filled)


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The argument names whose values differ between two versions of a call."""
    old, new = before.get("args") or {}, after.get("args") or {}
    return sorted(k for k in set(old) | set(new) if old.get(k, _MISSING) != new.get(k, _MISSING))


_MISSING = object()


def message_as_run(
    message: AIMessage, calls: Sequence[Mapping[str, Any]], rewritten: Mapping[str, list[str]]
) -> AIMessage:
    """The model's message as its calls will run, or ``message`` itself when nothing changed.

    A changed message is rebuilt as a plain ``AIMessage`` (same id, so it replaces the
    original in the state): a streamed chunk or raw provider tool calls in
    ``additional_kwargs`` would bring the model's arguments back after a checkpoint round
    trip. A policy's argument rewrite leaves a note for the model.
    """
    by_id = {str(c.get("id")): c for c in calls}
    new_calls = [by_id.get(str(c.get("id")), c) for c in message.tool_calls]
    if not rewritten and all(
        a.get("args") == b.get("args") for a, b in zip(new_calls, message.tool_calls, strict=True)
    ):
        return message
    content = content_without_calls(message)
    if rewritten:
        notes = "\n".join(
            f"[policy: the arguments of {by_id[call_id].get('name')} ({call_id}) were "
            f"adjusted: {', '.join(keys) or 'none'}]"
            for call_id, keys in rewritten.items()
        )
        if isinstance(content, str):
            content = f"{content}\n{notes}" if content else notes
        else:
            content = [*content, {"type": "text", "text": notes}]
    tool_calls = [
        {**c, "args": dict(c["args"])} if isinstance(c.get("args"), Mapping) else dict(c)
        for c in new_calls
    ]
    try:
        return plain_message(message, tool_calls, content)
    except (ValueError, TypeError, KeyError):
        # Malformed calls (denied anyway) cannot make a valid message; the calls that run
        # travel on their own, so the history keeps the model's message as it was.
        return message
