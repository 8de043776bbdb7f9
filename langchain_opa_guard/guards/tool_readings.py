"""How a tool reads the arguments of a call: its own way, or alike every time.

A call is decided as its tool reads it (:mod:`.prepared_calls`). A tool that reads its input
its own way cannot be read faithfully beforehand (:func:`reads_own_way`); a tool whose schema
calls no code of the application's reads the same arguments alike every time
(:func:`reads_alike`), so where it runs the grant holding its arguments is enough, and the
call is not read a second time (:mod:`.decided_views`).

Example:
    ```python
    if reads_alike(tool):
        ...  # the same arguments read the same when the tool runs
    ```
"""

from __future__ import annotations

import hashlib
import inspect
import re
from typing import Any

from langchain_core.tools import BaseTool, Tool
from pydantic import BaseModel

from langchain_opa_guard.guards.injections import executed_injections

__all__ = ["reading_mark", "reads_alike", "reads_own_way"]


def reads_own_way(tool: BaseTool) -> bool:
    """Whether the tool reads its arguments its own way: it overrides ``_parse_input``, or
    turns them into its function's arguments other than ``BaseTool`` (by name) or
    LangChain's single-input ``Tool`` (its one value, whatever its key) do."""
    kind = type(tool)
    if getattr(kind, "_parse_input", None) is not vars(BaseTool).get("_parse_input"):
        return True
    reading = getattr(kind, "_to_args_and_kwargs", None)
    return reading not in (
        vars(BaseTool).get("_to_args_and_kwargs"),
        vars(Tool).get("_to_args_and_kwargs"),
    )


def reads_alike(tool: BaseTool) -> bool:
    """Whether ``tool`` reads the same arguments the same way every time (its
    :func:`~.prepared_calls.prepared_call` is a function of the arguments alone), so a call
    that still has the arguments the policy decided still reads as decided: no schema, a
    JSON-schema dict, or a Pydantic v2 schema that calls no code of the application's (no
    validators or serializers, no classes but built-in types and Pydantic models without
    their own ``__new__``, ``__init__`` or ``model_post_init``, no default factories but
    built-in types, no mutable defaults, no computed fields). Anything else (a Pydantic
    v1 schema, a tool that reads its input its own way) may read differently later and
    is read again where it runs.
    Worked out once per tool and schema.
    """
    return _reading(tool) is not None


def reading_mark(tool: BaseTool) -> str | None:
    """For a tool that :func:`reads_alike`: a digest of how it reads its arguments (its
    class, the arguments LangGraph and LangChain inject, and its argument schema as
    Pydantic validates it, config included), the same in
    every process that runs the same code; ``None`` for any other tool. A grant carries it
    in place of the call's view, so a call runs unread only by a tool that reads as the one
    that decided it: after a checkpoint, another release of the tool may read otherwise.

    Example:
        ```python
        granted = reading_mark(tool)  # beside the grant
        runs_unread = granted is not None and reading_mark(tool_where_it_runs) == granted
        ```
    """
    return _reading(tool)


def _reading(tool: BaseTool) -> str | None:
    """:func:`reading_mark`, once per tool and schema."""
    full = tool.args_schema
    key = (id(tool), id(full))
    known = _ALIKE_BY_TOOL.get(key)
    if known is not None and known[0] is tool and known[1] is full:
        return known[2]
    found = _mark(tool, full) if _reads_alike(tool, full) else None
    if len(_ALIKE_BY_TOOL) >= 1024:
        _ALIKE_BY_TOOL.clear()
    _ALIKE_BY_TOOL[key] = (tool, full, found)
    return found


def _mark(tool: BaseTool, full: Any) -> str | None:
    kind = type(tool)
    schema: Any = full
    try:
        core = isinstance(full, type)
        reading = schema.__pydantic_core_schema__ if core else full
        injected = sorted(executed_injections(tool))
        text = repr(
            [f"{kind.__module__}.{kind.__qualname__}", injected, _plain_reading(reading, core)]
        )
    except Exception:  # noqa: BLE001 - a reading that cannot be written down: read it again
        return None
    return "alike:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


_PROCESS_ID = re.compile(r":\d+$")


def _plain_reading(node: Any, core: bool) -> Any:
    """A core schema (``core``) or JSON schema as plain data, without what differs between
    two processes running the same code: classes by name, a core schema node's references
    without their ``id`` suffix and its JSON-schema metadata left out (only a node's own:
    never a field or property of that name)."""
    if isinstance(node, dict):
        own = core and isinstance(node.get("type"), str)
        return sorted(
            (
                str(k),
                _PROCESS_ID.sub("", v)
                if own and k in ("ref", "schema_ref") and isinstance(v, str)
                else _plain_reading(v, core),
            )
            for k, v in node.items()
            if not (own and k == "metadata")
        )
    if isinstance(node, (list, tuple)):
        return [_plain_reading(v, core) for v in node]
    if isinstance(node, type):
        return f"{node.__module__}.{node.__qualname__}"
    if isinstance(node, (frozenset, set)):
        return sorted(repr(_plain_reading(v, core)) for v in node)
    return repr(node)


def _reads_alike(tool: BaseTool, full: Any) -> bool:
    if reads_own_way(tool):
        return False
    if full is None or isinstance(full, dict):
        return True
    if not (isinstance(full, type) and issubclass(full, BaseModel)):
        return False
    if full.model_dump is not BaseModel.model_dump or (
        getattr(full.model_validate, "__func__", None)
        is not vars(BaseModel)["model_validate"].__func__
    ):
        return False  # the schema reads or writes its values its own way
    try:
        return _calls_no_code(full.__pydantic_core_schema__)
    except Exception:  # noqa: BLE001 - a schema that cannot be walked: read it again
        return False


_PLAIN_TYPES = frozenset({str, int, float, bool, bytes, list, dict, tuple, set, frozenset})
_SCALARS = (str, int, float, bool, bytes, type(None))


def _calls_no_code(node: Any) -> bool:
    """Whether a Pydantic core schema (a tree of dicts and lists) runs no code of the
    application's when it validates and dumps: the only Python objects it may hold are
    built-in types, Pydantic models that construct themselves as Pydantic does (no
    ``__new__``, ``__init__`` or post-init hook of their own; Pydantic calls any other
    class it holds, a validator class, a ``NamedTuple`` or an ``Enum`` among them) and
    immutable default values (a mutable default can be changed by the application
    between the decision and the run); no computed fields (its ``metadata``, for JSON
    schemas, is skipped)."""
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            # A schema node names its kind under "type"; a mapping of fields or arguments
            # (keyed by the application's names, "metadata" or "default" among them) does not.
            node = isinstance(item.get("type"), str)
            if node and (item.get("post_init") or item.get("custom_init")):
                return False
            if node and item.get("computed_fields"):
                return False
            if node and "default" in item and not _immutable(item["default"]):
                return False
            for key, value in item.items():
                if node and (key == "metadata" or key == "default"):
                    continue
                if key == "cls" and item.get("type") == "model" and _plain_model(value):
                    continue
                stack.append(value)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif callable(item) and item not in _PLAIN_TYPES:
            return False
    return True


def _plain_model(cls: Any) -> bool:
    """A Pydantic model that builds and reads its fields as Pydantic does (LangChain hands
    the tool each field by ``getattr``)."""
    return (
        isinstance(cls, type)
        and issubclass(cls, BaseModel)
        and all(
            inspect.getattr_static(cls, name) is inspect.getattr_static(BaseModel, name)
            for name in _OWN_WAYS
        )
    )


_OWN_WAYS = (
    "__new__",
    "__init__",
    "model_post_init",
    "__getattribute__",
    "__getattr__",
    "__setattr__",
    "__iter__",
    "__eq__",
    "model_dump",
    "model_validate",
)


def _immutable(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(_immutable(v) for v in value)
    return False


# By tool object and schema (both kept, so their ids stay theirs); bounded.
_ALIKE_BY_TOOL: dict[tuple[int, int], tuple[BaseTool, Any, str | None]] = {}
