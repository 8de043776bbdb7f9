"""The arguments LangGraph and LangChain supply to a tool themselves, never the model.

State, store, runtime and the call id (``InjectedState``, ``InjectedStore``,
``ToolRuntime``, ``InjectedToolCallId``, any ``InjectedToolArg``) reach the tool beside the
model's arguments: the policy never sees the model's values for them, so none of them may
run (:func:`without_injected`). Found once per tool, as ``langgraph.prebuilt.tool_node`` and
``langchain_core`` find them (:func:`injected_fields`, :func:`toolnode_injections`).

Example:
    ```python
    without_injected(search_web, tool_call("search_web", {"query": "q", "region": "x"}, "s1"))
    # args == {"query": "q"} for ``region: Annotated[str, InjectedToolArg]``
    ```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from langchain_core.messages import ToolCall
from langchain_core.tools import BaseTool
from langgraph.prebuilt.tool_node import ToolCallRequest

__all__ = [
    "executed_injections",
    "injected_fields",
    "toolnode_injections",
    "without_injected",
    "without_injected_request",
]


def injected_fields(tool: BaseTool) -> frozenset[str]:
    """The arguments LangGraph or LangChain supply themselves, never the model: those their
    annotations mark (``InjectedToolArg`` and its kinds: ``InjectedState``,
    ``InjectedStore``, ``InjectedToolCallId``; ``ToolRuntime``), as
    ``langgraph.prebuilt.tool_node`` finds them (it strips the model's values for them) and
    as ``langchain_core`` does. A field merely absent from ``tool_call_schema`` (LangChain
    leaves out a field with a ``validation_alias``) is the model's: its value reaches the
    tool, so the policy decides it."""
    return _injections(tool)[0]


_Injections = tuple[frozenset[str], frozenset[str]]


def _injections(tool: BaseTool) -> _Injections:
    """:func:`injected_fields` and :func:`toolnode_injections`, once per tool and schema."""
    full = tool.args_schema
    key = (id(tool), id(full))
    known = _INJECTED_BY_TOOL.get(key)
    if known is not None and known[0] is tool and known[1] is full:
        return known[2]
    found = (_injected_fields(tool), _toolnode_injections(tool))
    if len(_INJECTED_BY_TOOL) >= 1024:
        _INJECTED_BY_TOOL.clear()
    _INJECTED_BY_TOOL[key] = (tool, full, found)
    return found


def _injected_fields(tool: BaseTool) -> frozenset[str]:
    names: set[str] = set()
    try:
        from langgraph.prebuilt.tool_node import _get_all_injected_args

        found = _get_all_injected_args(tool)
        names.update(found.all_injected_keys, found.state)
        names.update(n for n in (found.store, found.runtime) if n)
    except Exception:  # noqa: BLE001 - a LangGraph without it (or a schema it cannot read)
        pass
    try:  # langchain_core's own reading: the schema's annotations and the function's
        from langchain_core.tools.base import _is_injected_arg_type, get_all_basemodel_annotations

        schema = tool.get_input_schema()
        for name, kind in get_all_basemodel_annotations(schema).items():
            if _is_injected_arg_type(kind):
                names.add(name)
        names.update(getattr(tool, "_injected_args_keys", ()))
    except Exception:  # noqa: BLE001 - nothing more known: the model's arguments stay in view
        pass
    return frozenset(names)


def toolnode_injections(tool: BaseTool) -> frozenset[str]:
    """The parameters LangGraph's ``ToolNode`` fills in before the tool runs (state, store,
    runtime; MCP tools take a ``runtime`` although their schema is plain JSON), from
    ``langgraph.prebuilt.tool_node``'s own analysis, a private function pinned by a test."""
    return _injections(tool)[1]


def _toolnode_injections(tool: BaseTool) -> frozenset[str]:
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


def without_injected(tool: BaseTool | None, call: ToolCall) -> ToolCall:
    """``call`` without the model's values for the arguments the application and LangGraph
    supply (:func:`executed_injections`), or ``call`` itself when it sets none.

    The policy never sees those values, so none of them may run: a ``ToolNode`` fills in
    state, store and runtime itself, LangChain the call id, and an ``InjectedToolArg`` the
    model set keeps the tool's default, whatever the LangGraph version (newer ``ToolNode``
    releases drop such values themselves, older ones ran them). Every guard runs a model's
    call through this before the ``ToolNode`` injects its own values.

    Example:
        ```python
        without_injected(search_web, tool_call("search_web", {"query": "q", "region": "x"}, "s1"))
        # args == {"query": "q"} for ``region: Annotated[str, InjectedToolArg]``
        ```
    """
    args = call.get("args")
    if tool is None or not isinstance(args, Mapping):
        return call
    hidden = executed_injections(tool)
    if hidden.isdisjoint(args):
        return call
    return cast(ToolCall, {**call, "args": {k: v for k, v in args.items() if k not in hidden}})


def without_injected_request(request: ToolCallRequest) -> ToolCallRequest:
    """``request`` with its call :func:`without_injected` (``request`` itself when the call
    sets no injected argument)."""
    call = without_injected(request.tool, request.tool_call)
    return request if call is request.tool_call else request.override(tool_call=call)


# By tool object and schema (both kept, so their ids stay theirs); bounded.
_INJECTED_BY_TOOL: dict[tuple[int, int], tuple[BaseTool, Any, _Injections]] = {}
