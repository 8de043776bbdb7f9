"""The verdict of a policy engine on one tool call, and how engine output becomes one.

A policy may answer in any of three shapes, all accepted at the configured decision path:

* a decision object ``{"allow": bool, "reasons": [...]}`` (optionally with
  ``"require_approval": true``);
* a bare boolean;
* a set or array of deny reasons, OPA's agent-tool-calling convention, where an empty
  collection means allow.

Anything else, and every failure of the engine itself, becomes a *deny* whose ``error``
names what went wrong: the guard fails closed.

Example:
    ```python
    from langchain_opa_guard import Decision

    decision = Decision.from_result({"allow": False, "reasons": ["guests may not delete"]})
    assert not decision.allow and decision.reasons == ("guests may not delete",)
    ```
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any

__all__ = ["Decision", "EngineError", "ErrorType"]


class ErrorType:
    """Error types of a failed evaluation (the ``error.type`` of its span).

    ``TIMEOUT``, ``UNREACHABLE`` (refused, reset, TLS failure, proxy failure) and
    ``SERVER_ERROR`` (HTTP 5xx but 500: a gateway or an unavailable server) mean no answer
    came; OPA's HTTP 500 (an evaluation that failed for this input) is ``ENGINE``;
    ``HTTP_STATUS`` (another HTTP error),
    ``REDIRECT`` (never followed), ``UNAUTHORIZED``, ``UNDEFINED``, ``MALFORMED``,
    ``ENGINE``, ``INPUT`` and ``INVALID_CALL`` mean an answer came that is not a decision;
    ``CANCELLED``: the caller gave up (task cancelled) before the decision was made.
    """

    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    SERVER_ERROR = "server_error"
    HTTP_STATUS = "http_status"
    REDIRECT = "redirect"
    UNAUTHORIZED = "unauthorized"
    UNDEFINED = "undefined"
    MALFORMED = "malformed"
    ENGINE = "engine_error"
    INPUT = "invalid_input"
    INVALID_CALL = "invalid_call"
    CANCELLED = "cancelled"

    TRANSPORT_FAILURES = frozenset({TIMEOUT, UNREACHABLE, SERVER_ERROR})
    """Failures to reach an answer at all (OPA unreachable, too slow, HTTP 502/503/504):
    the only ones ``fail_open`` applies to. An undefined or malformed answer, or an
    evaluation that failed (HTTP 500), is never one."""


class EngineError(Exception):
    """A policy engine could not produce a decision.

    ``error_type`` is one of :class:`ErrorType`; ``reason`` is safe to show to the model
    (no URLs, tokens or stack traces).
    """

    def __init__(self, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.error_type = error_type
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Decision:
    """An immutable policy decision on one proposed tool call.

    Attributes:
        allow: Whether the call may run.
        reasons: Why not (or any notes the policy attached), in the policy's words.
        codes: Stable reason codes, when the policy gives reasons as
            ``{"code": ..., "message": ...}`` objects (safe to record in traces and metrics).
        decision_id: OPA's decision id when decision logging is on, else ``None``.
        require_approval: The policy asks a human to approve the call.
        error: ``None`` for a decision the policy made; an :class:`ErrorType` when the
            engine failed and the guard denied the call on its behalf.
        engine: Which engine decided (``"opa"`` or ``"embedded"``).
        policy: The decision path that was evaluated (``"agent/authz/decision"``).
        result: The raw value the policy returned, when there was one.
        revision: The policy revision the decision was made under (an OPA bundle
            revision, or a content hash of the embedded engine's policies and data).
        args: Arguments the policy rewrote the call to (``{"allow": true, "args": {...}}``);
            the rewritten call is what runs.
        shadowed: The policy said no, but the call runs because its rule or tool is in
            shadow mode (``verdict`` is ``"allow"``; traces and metrics say "would deny").
    """

    allow: bool
    reasons: tuple[str, ...] = ()
    decision_id: str | None = None
    _: KW_ONLY
    codes: tuple[str, ...] = ()
    require_approval: bool = False
    error: str | None = None
    engine: str = ""
    policy: str = ""
    result: Any = None
    revision: str | None = None
    args: Mapping[str, Any] | None = None
    shadowed: bool = False

    @property
    def verdict(self) -> str:
        """``"allow"``, ``"deny"`` or ``"approval"`` (a human must decide)."""
        if self.allow:
            return "allow"
        return "approval" if self.require_approval else "deny"

    @classmethod
    def from_result(
        cls,
        result: Any,
        *,
        decision_id: str | None = None,
        engine: str = "",
        policy: str = "",
        revision: str | None = None,
    ) -> Decision:
        """Interpret a policy's value at the decision path.

        Raises:
            EngineError: The value is none of the accepted shapes.
        """
        if isinstance(result, bool):
            reasons: tuple[str, ...] = () if result else ("denied by policy",)
            return cls(
                result,
                reasons,
                decision_id,
                engine=engine,
                policy=policy,
                result=result,
                revision=revision,
            )
        if isinstance(result, Mapping):
            allow = result.get("allow")
            if not isinstance(allow, bool):
                raise EngineError(
                    ErrorType.MALFORMED,
                    "the policy's decision has no boolean 'allow'",
                )
            approval = result.get("require_approval") is True and not allow
            reasons, codes = _reasons(result.get("reasons", result.get("reason", ())))
            if not allow and not reasons:
                reasons = ("approval required by policy",) if approval else ("denied by policy",)
            rewrite = result.get("args")
            if rewrite is not None and not isinstance(rewrite, Mapping):
                raise EngineError(ErrorType.MALFORMED, "the policy's 'args' is not an object")
            return cls(
                allow,
                reasons,
                decision_id,
                codes=codes,
                require_approval=approval,
                engine=engine,
                policy=policy,
                result=result,
                revision=revision,
                args=rewrite if allow else None,
            )
        if isinstance(result, (list, tuple, set, frozenset)):
            deny, codes = _reasons(result)
            return cls(
                not deny,
                deny,
                decision_id,
                codes=codes,
                engine=engine,
                policy=policy,
                result=result,
                revision=revision,
            )
        raise EngineError(
            ErrorType.MALFORMED,
            f"the policy returned a {_type_name(result)} where a decision was expected",
        )

    @classmethod
    def failure(
        cls,
        error_type: str,
        reason: str,
        *,
        engine: str = "",
        policy: str = "",
        decision_id: str | None = None,
    ) -> Decision:
        """A fail-closed deny for an engine failure."""
        return cls(
            False,
            (f"policy engine failed: {reason}",),
            decision_id,
            error=error_type,
            engine=engine,
            policy=policy,
        )


def _reasons(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Reason texts and codes from a string, a list/set of strings, or coded objects."""
    if value is None:
        return (), ()
    if isinstance(value, str):
        return ((value,) if value else ()), ()
    if isinstance(value, Mapping) and ("message" in value or "code" in value):
        items: list[Any] = [value]
    elif isinstance(value, Mapping):
        items = [str(k) if isinstance(v, bool) else f"{k}: {v}" for k, v in value.items()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        items = [value]
    texts: list[str] = []
    codes: list[str] = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, Mapping) and ("message" in item or "code" in item):
            code = item.get("code")
            message = item.get("message")
            if isinstance(code, str) and code:
                codes.append(code)
            texts.append(message if isinstance(message, str) and message else str(code))
        else:
            texts.append(json.dumps(item, sort_keys=True, default=str))
    if isinstance(value, (set, frozenset)):
        texts.sort()
    return tuple(texts), tuple(codes)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {int: "number", float: "number", str: "string"}.get(type(value), type(value).__name__)
