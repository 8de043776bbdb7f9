"""Checks of the guard surfaces' constructor arguments: bad input fails where it enters.

Each check raises ``TypeError`` or ``ValueError`` naming the argument, so
``PolicyGuardNode("x")`` fails at construction rather than denying every call at run time.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode

from langchain_opa_guard.engines.engine import PolicyEngine

__all__ = [
    "check_engine",
    "check_choice",
    "check_names",
    "check_shadow",
    "check_denial_style",
    "check_optional_int",
    "registry_index",
]


def _kind(value: Any) -> str:
    return type(value).__name__


def check_engine(engine: Any, argument: str = "engine") -> PolicyEngine:
    """``engine`` must be a policy engine (``decide``, ``adecide``, ``decide_many``, ...)."""
    if not isinstance(engine, PolicyEngine):
        raise TypeError(
            f"{argument} must be a policy engine (OPAServer, EmbeddedPolicy or an object with "
            f"decide/adecide/decide_many/adecide_many, engine_name and policy), "
            f"got {_kind(engine)} {engine!r:.60}"
        )
    return engine


def check_choice(value: Any, argument: str, choices: Collection[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{argument} must be one of {options}, got {value!r:.60}")
    return value


def check_name(value: Any, argument: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{argument} must be a non-empty string, got {_kind(value)} {value!r:.60}")
    return value


def check_names(value: Any, argument: str) -> frozenset[str]:
    """A collection of names (tool names or reason codes); a bare string is refused."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"{argument} must be a collection of names such as {{'search_web'}}, "
            f"got {_kind(value)} {value!r:.60}"
        )
    names = frozenset(value)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f"{argument} must hold strings, got {bad[0]!r:.60}")
    return names


def check_shadow(value: Any, argument: str = "shadow") -> bool | frozenset[str]:
    if isinstance(value, bool):
        return value
    return check_names(value, argument)


def check_denial_style(value: Any, argument: str = "denial_style") -> Any:
    if callable(value) or value in ("full", "generic"):
        return value
    raise ValueError(
        f"{argument} must be 'full', 'generic' or a function of (decision, call), got {value!r:.60}"
    )


def check_optional_int(value: Any, argument: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{argument} must be None or an integer >= {minimum}, got {value!r:.60}")
    return value


def registry_index(
    registry: Any, argument: str = "registry"
) -> tuple[dict[str, Mapping[str, Any]], dict[str, BaseTool]]:
    """``(name -> metadata, name -> tool)`` from a ToolNode, a list of tools, or a mapping.

    A mapping of name -> metadata gives no tool objects, so arguments are not checked
    against a schema before the policy sees them.
    """
    if registry is None:
        return {}, {}
    if isinstance(registry, ToolNode):
        tools = dict(registry.tools_by_name)
        return {name: dict(t.metadata or {}) for name, t in tools.items()}, tools
    if isinstance(registry, Mapping):
        for name, meta in registry.items():
            if not isinstance(name, str) or not (meta is None or isinstance(meta, Mapping)):
                raise TypeError(
                    f"{argument} as a mapping must map tool names to metadata dicts, "
                    f"got {name!r:.40}: {_kind(meta)}"
                )
        return {name: dict(meta or {}) for name, meta in registry.items()}, {}
    if isinstance(registry, (str, bytes)) or not isinstance(registry, Iterable):
        raise TypeError(
            f"{argument} must be a ToolNode, a list of tools or a mapping of tool name to "
            f"metadata, got {_kind(registry)} {registry!r:.60}"
        )
    listed = list(registry)
    for tool in listed:
        if not isinstance(tool, BaseTool):
            raise TypeError(f"{argument} must hold LangChain tools, got {_kind(tool)} {tool!r:.60}")
    tools = {t.name: t for t in listed}
    return {name: dict(t.metadata or {}) for name, t in tools.items()}, tools
