"""Tool visibility: which tools a subject may use at all, asked of the same policy.

The model is bound only to the tools it may use, so it does not plan around tools it will be
refused. Visibility is not enforcement: every call is still decided by the guard.

The policy answers at ``data.agent.authz.visible_tools`` (configurable) with a set or array of
tool names, or an object of name -> boolean. Its input is::

    {"version": 1, "user": ..., "context": {...}, "tools": [{"name": ..., "metadata": {...}}]}

An engine failure or an undefined answer shows no tools (fail closed).

Example:
    ```python
    from langchain_opa_guard import EmbeddedPolicy, visible_tools

    engine = EmbeddedPolicy("policies")
    tools_for_guest = visible_tools(engine, tools, user={"id": "u-7", "role": "guest"})
    model = chat_model.bind_tools(tools_for_guest)
    ```
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from langchain_opa_guard.contract import CONTRACT_VERSION, jsonable
from langchain_opa_guard.decision import EngineError

__all__ = [
    "DEFAULT_VISIBILITY_PATH",
    "avisible_tool_names",
    "avisible_tools",
    "visible_tool_names",
    "visible_tools",
]

logger = logging.getLogger(__name__)

DEFAULT_VISIBILITY_PATH = "agent/authz/visible_tools"

T = TypeVar("T")


class _Queryable(Protocol):
    def query(self, path: str, input: Mapping[str, Any]) -> Any: ...


def _name_of(tool: Any) -> str:
    if isinstance(tool, Mapping):
        function = tool.get("function")
        if isinstance(function, Mapping):
            return str(function.get("name", ""))
        return str(tool.get("name", ""))
    return str(getattr(tool, "name", ""))


def _metadata_of(tool: Any) -> Any:
    if isinstance(tool, Mapping):
        return tool.get("metadata") or {}
    return getattr(tool, "metadata", None) or {}


def _document(user: Any, tools: Sequence[Any], context: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "version": CONTRACT_VERSION,
        "user": jsonable(user),
        "context": jsonable(dict(context or {})),
        "tools": [{"name": _name_of(t), "metadata": jsonable(_metadata_of(t))} for t in tools],
    }


def _names(answer: Any) -> set[str]:
    if isinstance(answer, Mapping):
        return {str(k) for k, v in answer.items() if v is True}
    if isinstance(answer, (list, tuple, set, frozenset)):
        return {a for a in answer if isinstance(a, str)}
    if answer is not None:
        logger.warning("tool visibility is not a set of names; showing no tools")
    return set()


def visible_tool_names(
    engine: _Queryable,
    tools: Sequence[Any],
    *,
    user: Any,
    context: Mapping[str, Any] | None = None,
    path: str = DEFAULT_VISIBILITY_PATH,
) -> set[str]:
    """The names of ``tools`` that the policy lets ``user`` see."""
    try:
        answer = engine.query(path, _document(user, tools, context))
    except EngineError as exc:
        logger.warning("tool visibility could not be evaluated (%s); showing no tools", exc)
        return set()
    return _names(answer)


async def avisible_tool_names(
    engine: _Queryable,
    tools: Sequence[Any],
    *,
    user: Any,
    context: Mapping[str, Any] | None = None,
    path: str = DEFAULT_VISIBILITY_PATH,
) -> set[str]:
    """Async twin of :func:`visible_tool_names`: the engine's ``aquery`` when it has one,
    else ``query`` in a worker thread; the event loop never waits on the engine."""
    document = _document(user, tools, context)
    aquery = getattr(engine, "aquery", None)
    try:
        if callable(aquery):
            answer = await aquery(path, document)
        else:
            answer = await asyncio.to_thread(engine.query, path, document)
    except EngineError as exc:
        logger.warning("tool visibility could not be evaluated (%s); showing no tools", exc)
        return set()
    return _names(answer)


def visible_tools(
    engine: _Queryable,
    tools: Sequence[T],
    *,
    user: Any,
    context: Mapping[str, Any] | None = None,
    path: str = DEFAULT_VISIBILITY_PATH,
) -> list[T]:
    """``tools`` filtered to those the policy lets ``user`` see, in their order."""
    names = visible_tool_names(engine, tools, user=user, context=context, path=path)
    return [t for t in tools if _name_of(t) in names]


async def avisible_tools(
    engine: _Queryable,
    tools: Sequence[T],
    *,
    user: Any,
    context: Mapping[str, Any] | None = None,
    path: str = DEFAULT_VISIBILITY_PATH,
) -> list[T]:
    """Async twin of :func:`visible_tools`; never blocks the event loop."""
    names = await avisible_tool_names(engine, tools, user=user, context=context, path=path)
    return [t for t in tools if _name_of(t) in names]
