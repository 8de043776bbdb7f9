"""The argument names LangChain's own run of a tool fills itself: a model's value under one of
them never reaches the tool.

``BaseTool.run``/``arun`` hand the tool's ``_run``/``_arun`` the run's ``RunnableConfig``
(under the name its parameter annotated ``RunnableConfig`` has, ``config`` for every
``StructuredTool`` and ``Tool``) and its callback manager (``run_manager``), overwriting
whatever the model sent under those names; ``StructuredTool`` then consumes both itself and
hands its function the run's config and callbacks under the names the function gives them
(a parameter annotated ``RunnableConfig``; ``callbacks``). A tool whose schema shows the
model an ordinary argument of such a name (``purge(table, config: dict | None = None)``) runs
with its default for it, whatever the model sent: a call that sets one is refused
(:func:`~.prepared_calls.prepared_call`), since the policy would decide a value the tool
never gets.

Example:
    ```python
    @tool
    def purge(table: str, config: dict | None = None) -> str: ...

    run_parameters(purge)  # frozenset({"config", "run_manager"})
    ```
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool

__all__ = ["run_parameters"]

_BY_TOOL: dict[tuple[int, int], tuple[BaseTool, Any, frozenset[str]]] = {}


def run_parameters(tool: BaseTool) -> frozenset[str]:
    """The names whose model values ``tool``'s run overwrites or drops (worked out once per
    tool and function)."""
    function = getattr(tool, "func", None) or getattr(tool, "coroutine", None)
    key = (id(tool), id(function))
    known = _BY_TOOL.get(key)
    if known is not None and known[0] is tool and known[1] is function:
        return known[2]
    found = _run_parameters(tool)
    if len(_BY_TOOL) >= 1024:
        _BY_TOOL.clear()
    _BY_TOOL[key] = (tool, function, found)
    return found


def _run_parameters(tool: BaseTool) -> frozenset[str]:
    kind = type(tool)
    names: set[str] = set()
    # The methods LangChain's run hands the config and the run manager (the async run
    # calls ``_run`` when the class keeps BaseTool's ``_arun``).
    inherited = vars(BaseTool).get("_arun")
    for name in ("_run", "_arun"):
        method = getattr(kind, name, None)
        if method is None or method is inherited:
            continue
        parameters = _parameters(method)
        if "run_manager" in parameters:
            names.add("run_manager")
        names.update(_config_parameters(method))
    for function in (getattr(tool, "func", None), getattr(tool, "coroutine", None)):
        if callable(function):
            if "callbacks" in _parameters(function):
                names.add("callbacks")
            names.update(_config_parameters(function))
    return frozenset(names)


def _parameters(function: Callable[..., Any]) -> Any:
    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}


def _config_parameters(function: Callable[..., Any]) -> set[str]:
    """The parameters of ``function`` annotated ``RunnableConfig`` (as LangChain finds them)."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - annotations that do not resolve: none found
        return set()
    return {name for name, hint in hints.items() if hint is RunnableConfig}
