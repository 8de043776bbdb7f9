"""The contract every policy engine meets, and the pieces the engines share.

An engine turns one policy input document into a :class:`~langchain_opa_guard.Decision`
and never raises for a failed evaluation: it returns a fail-closed deny instead. The
guard hands it all the calls of one model turn at once (``decide_many``), so an engine
can evaluate them together rather than one after another.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from langchain_opa_guard.decision import Decision, EngineError, ErrorType

__all__ = ["PolicyEngine", "encode_input", "DEFAULT_POLICY"]

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

    Raises:
        EngineError: The document is not JSON (for example it holds NaN or an object).
    """
    try:
        body = input if key is None else {key: input}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise EngineError(ErrorType.INPUT, "the policy input could not be encoded as JSON") from exc


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
