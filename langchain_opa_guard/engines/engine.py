"""The contract every policy engine meets, and the pieces the engines share.

An engine turns one policy input document into a :class:`~langchain_opa_guard.Decision`
and never raises for a failed evaluation: it returns a fail-closed deny instead. The
guard hands it all the calls of one model turn at once (``decide_many``), so an engine
can evaluate them together rather than one after another.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from langchain_opa_guard.decision import Decision, EngineError, ErrorType
from langchain_opa_guard.fast_json import plain_dumps

__all__ = ["PolicyEngine", "encode_input", "same_json", "shared_part", "DEFAULT_POLICY"]

DEFAULT_POLICY = "agent/authz/decision"
"""The decision path both engines evaluate unless told otherwise."""


@runtime_checkable
class PolicyEngine(Protocol):
    """What the guard needs from a policy engine.

    Both :class:`~langchain_opa_guard.OPAServer` and
    :class:`~langchain_opa_guard.EmbeddedPolicy` implement it; so can a user's own engine.

    Optional members the guard uses when an engine has them: ``in_process`` (``True``: the
    calls of a turn are evaluated in order, off the event loop, instead of concurrently),
    ``batches`` (``True``: ``decide_many`` answers a whole turn in one round trip),
    ``query(path, input)`` (other documents of the policy, for tool visibility),
    ``revision``, ``current_revision()`` or ``acurrent_revision()`` (the policy revision
    in force, for resume re-checks), ``aquery`` (``query`` without blocking the loop).
    """

    engine_name: str
    policy: str

    def decide(self, input: Mapping[str, Any]) -> Decision:
        """Evaluate one input document."""
        ...

    async def adecide(self, input: Mapping[str, Any]) -> Decision:
        """Evaluate one input document without blocking the event loop."""
        ...

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Evaluate the inputs of one turn together; one decision per input, in order."""
        ...

    async def adecide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Async twin of :meth:`decide_many`."""
        ...


def encode_input(input: Mapping[str, Any], *, key: str | None = "input") -> bytes:
    """Encode an input document as compact JSON, wrapped as ``{"input": ...}`` by default.

    Enums and UUIDs are written by value (their JSON form); anything else that is not
    JSON data is refused.

    Raises:
        EngineError: The document is not JSON (for example it holds NaN or an object).
    """
    body = input if key is None else {key: input}
    text = plain_dumps(body)
    if text is not None:
        return text
    try:
        return json.dumps(
            body, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_by_value
        ).encode()
    except (TypeError, ValueError) as exc:
        raise EngineError(ErrorType.INPUT, "the policy input could not be encoded as JSON") from exc


def _by_value(value: Any) -> Any:
    """What :func:`encode_input` writes for a value JSON has no form of (as ``orjson``
    does): an enum's value, a UUID's text; anything else is refused."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def same_json(a: Any, b: Any) -> bool:
    """JSON equality, strict about types (``1 == True`` and ``1 == 1.0`` are not): equal,
    and equal in ``repr`` too (which tells those apart)."""
    return a is b or (a == b and repr(a) == repr(b))


def shared_part(inputs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The shared part of a turn's inputs (all but ``tool``), when they differ only in
    ``tool`` and every ``tool`` has its own string ``call_id``; else ``None``.

    The guard's inputs share the very objects; others are compared as JSON, strict about
    types, so an input is never decided on another's values.

    Example:
        ```python
        turn = [{"version": 1, "tool": {"call_id": "a"}}, {"version": 1, "tool": {"call_id": "b"}}]
        assert shared_part(turn) == {"version": 1}
        ```
    """
    first = inputs[0]
    shared = {k: v for k, v in first.items() if k != "tool"}
    size = len(first)
    ids: set[str] = set()
    for document in inputs:
        tool = document.get("tool")
        # (``type() is dict`` first: the guard's documents are dicts, and the ABC check
        # costs more than the rest of this loop.)
        if type(tool) is not dict and not isinstance(tool, Mapping):
            return None
        call_id = tool.get("call_id")
        if not isinstance(call_id, str) or call_id in ids:
            return None
        ids.add(call_id)
        if document is first:
            continue
        if len(document) != size:
            return None
        for key, value in shared.items():
            other = document.get(key, _MISSING)
            if other is not value and not same_json(other, value):
                return None
    return shared


_MISSING: Any = object()


def path_to_ref(policy: str) -> str:
    """``agent/authz/decision`` -> ``data.agent.authz.decision``."""
    return "data." + ".".join(part for part in policy.strip("/").split("/") if part)


def normalize_policy_path(policy: str) -> str:
    """Accept ``agent/authz/decision``, ``agent.authz.decision`` or ``data.agent.authz...``."""
    path = policy.strip().strip("/")
    if path.startswith("data.") or path == "data":
        path = path[5:]
    if "/" not in path:
        path = path.replace(".", "/")
    if not path:
        raise ValueError("the policy decision path is empty")
    return path
