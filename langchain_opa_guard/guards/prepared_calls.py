"""A tool call as it will run: its arguments through the tool's own schema.

The policy decides on the arguments that will run, so every guard prepares each call first
(:func:`prepared_call`): values coerced and normalised by the tool's schema and validators,
keys the tool does not take dropped, and the arguments LangGraph injects (state, store, call
id, runtime) kept apart from the model's (:func:`injected_fields`,
:func:`toolnode_injections`). Where the guard changed a call (a schema coercion, a policy
rewrite, a reviewer's edit), :func:`message_as_run` gives the model's message holding the calls
as they run.

Example:
    ```python
    call, problem = prepared_call(tool, {"name": "refund", "args": {"amount": "50"}, "id": "c1"})
    # call["args"] == {"amount": 50} for an integer field; problem names failing fields
    ```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from langchain_core.messages import AIMessage, ToolCall
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError, create_model

__all__ = [
    "changed_keys",
    "executed_injections",
    "injected_fields",
    "message_as_run",
    "prepared_call",
    "toolnode_injections",
]


def injected_fields(tool: BaseTool) -> frozenset[str]:
    """Arguments the ToolNode injects (state, store, call id, runtime): not the model's."""
    full = tool.args_schema
    key = (id(tool), id(full))
    known = _INJECTED_BY_TOOL.get(key)
    if known is not None and known[0] is tool and known[1] is full:
        return known[2]
    found = _injected_fields(tool, full)
    if len(_INJECTED_BY_TOOL) >= 1024:
        _INJECTED_BY_TOOL.clear()
    _INJECTED_BY_TOOL[key] = (tool, full, found)
    return found


def _injected_fields(tool: BaseTool, full: Any) -> frozenset[str]:
    # ``tool_call_schema`` builds a model on every read: asked once per tool and schema.
    visible = tool.tool_call_schema
    if not (
        isinstance(full, type)
        and issubclass(full, BaseModel)
        and isinstance(visible, type)
        and issubclass(visible, BaseModel)
    ):
        return frozenset()
    cached = _INJECTED.get((full, visible))
    if cached is None:
        hidden = [k for k in full.model_fields if k not in visible.model_fields]
        aliases = [full.model_fields[k].alias for k in hidden]
        cached = _INJECTED[(full, visible)] = frozenset([*hidden, *(a for a in aliases if a)])
    return cached


def toolnode_injections(tool: BaseTool) -> frozenset[str]:
    """The parameters LangGraph's ``ToolNode`` fills in before the tool runs (state, store,
    runtime; MCP tools take a ``runtime`` although their schema is plain JSON), from
    ``langgraph.prebuilt.tool_node``'s own analysis, a private function pinned by a test."""
    try:
        from langgraph.prebuilt.tool_node import _get_all_injected_args

        found = _get_all_injected_args(tool)
    except Exception:  # noqa: BLE001 - a LangGraph without it: none known
        return frozenset()
    names = set(found.state)
    names.update(n for n in (found.store, found.runtime) if n)
    return frozenset(names)


def executed_injections(tool: BaseTool) -> frozenset[str]:
    """Every argument that may sit beside the model's in a call as it runs: the schema's
    injected fields and what a ``ToolNode`` fills in."""
    return injected_fields(tool) | toolnode_injections(tool)


# Keyed by the schema classes (tools themselves are not hashable): as many as the
# application's tools define.
_INJECTED: dict[tuple[type[BaseModel], type[BaseModel]], frozenset[str]] = {}
# By tool object and schema (both kept, so their ids stay theirs); bounded.
_INJECTED_BY_TOOL: dict[tuple[int, int], tuple[BaseTool, Any, frozenset[str]]] = {}
_SCHEMAS: dict[type[BaseModel], type[BaseModel] | None] = {}


def _decision_schema(tool: BaseTool) -> type[BaseModel] | None:
    """The tool's own argument schema, validators and config included, with the injected
    arguments made optional: what the tool will validate, minus what the model never sends.

    (``tool_call_schema`` is a copy of the fields alone: a validator that rewrites a value
    would run only when the tool runs, after the policy decided on the raw value.)
    """
    full = tool.args_schema
    if isinstance(full, type) and full in _SCHEMAS:
        return _SCHEMAS[full]
    schema: type[BaseModel] | None = None
    if isinstance(full, type) and issubclass(full, BaseModel):
        hidden = [k for k in full.model_fields if k in injected_fields(tool)]
        try:
            schema = (
                create_model(  # type: ignore[call-overload]
                    f"{full.__name__}Decided", __base__=full, **dict.fromkeys(hidden, (Any, None))
                )
                if hidden
                else full
            )
        except Exception:  # noqa: BLE001 - an unusual schema: the model-facing copy will do
            schema = None
        _SCHEMAS[full] = schema
    if schema is None:
        visible = tool.tool_call_schema
        if isinstance(visible, type) and issubclass(visible, BaseModel):
            schema = visible
    return schema


def prepared_call(tool: BaseTool | None, call: ToolCall) -> tuple[ToolCall, str | None]:
    """The call as its tool will read it, for the policy to decide on; or why it cannot run.

    The arguments go through the tool's own schema, its validators included (``"5000"``
    becomes ``5000`` for an integer field, a validator that normalises an address runs,
    keys the tool does not take are dropped), so the policy decides on what will run. The
    call itself still runs with the model's arguments, which the tool validates the same
    way: a validator is applied once, whether it is idempotent or not (one that decodes a
    path would otherwise decode it twice). Defaults the model left out are not added: they
    are the tool's, not the model's. Arguments keep the names the model sees in the tool's
    schema (an alias where a field has one), so a field sent twice (by name and by alias)
    is decided once, as the tool will read it. A tool without a Pydantic schema (a
    JSON-schema tool) is decided on the model's arguments. The reason names the fields that
    failed, never their values.
    """
    args = call.get("args")
    if tool is None or not isinstance(args, Mapping):
        return call, None
    schema = _decision_schema(tool)
    if schema is None:
        return call, None
    hidden = injected_fields(tool)
    given = {k: v for k, v in args.items() if k not in hidden}
    try:
        model = schema.model_validate(given)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "(arguments)" for e in exc.errors()})
        return call, "the arguments do not match the tool's schema: " + ", ".join(fields[:8])
    except Exception:  # noqa: BLE001 - a validator of the tool's own raised
        return call, "the arguments do not match the tool's schema"
    provided = {k for k in model.model_fields_set if k not in hidden}
    # Python values (a Decimal stays a number, a datetime an instant): the policy input
    # turns them into JSON (contract.jsonable) the same way everywhere.
    view = model.model_dump(by_alias=True, include=provided)
    if view == args:
        return call, None
    return cast(ToolCall, {**call, "args": view}), None


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
    content: Any = message.content
    if isinstance(content, list):
        content = [
            b
            for b in content
            if not (isinstance(b, Mapping) and b.get("type") in ("tool_use", "tool_call"))
        ]
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
    extra = {
        k: v
        for k, v in message.additional_kwargs.items()
        if k not in ("tool_calls", "function_call")
    }
    tool_calls = [
        {**c, "args": dict(c["args"])} if isinstance(c.get("args"), Mapping) else dict(c)
        for c in new_calls
    ]
    try:
        return AIMessage(
            content=content,
            tool_calls=tool_calls,
            invalid_tool_calls=list(message.invalid_tool_calls),
            additional_kwargs=extra,
            response_metadata=dict(message.response_metadata),
            usage_metadata=message.usage_metadata,
            id=message.id,
            name=message.name,
        )
    except (ValueError, TypeError, KeyError):
        # Malformed calls (denied anyway) cannot make a valid message; the calls that run
        # travel on their own, so the history keeps the model's message as it was.
        return message
