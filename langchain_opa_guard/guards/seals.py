"""Seals: what the guard hands on to the node that runs its decisions, made unforgeable.

The guard passes its decisions on in graph data: the tools node's ``Send`` payload (the
allowed calls and their grants), the middleware's grants and decided turn in the agent
state, the edge's decisions for the guard node, a turn waiting for approval (its calls and
the policy inputs they are decided again with on resume). Graph code of the application is
trusted as the guard is, but a graph's caller is not: LangGraph lets the input of a run be
a ``Command`` whose ``goto`` is a ``Send`` to any node with any payload, and whose
``update`` writes any channel (a LangGraph server takes both from its API clients). Each of
those hand-overs therefore carries an HMAC-SHA256 seal over what it grants, under a key only
the guard holds; a hand-over whose seal does not verify grants nothing (its calls are
decided again, or answered unrun).

The key is ``$OPA_GUARD_SEAL_KEY`` when set (any text; give every process of a deployment
the same one, so that a run paused in one process and resumed in another keeps its grants),
else a random key made when this module is first imported: grants then hold only in the
process that made them, and a paused run resumed elsewhere has its calls decided again or
answered unrun (never run unchecked).

Example:
    ```python
    mark = seal("grant", {"calls": {"c1": "9f2c..."}, "turn": "..."})
    assert sealed("grant", {"calls": {"c1": "9f2c..."}, "turn": "..."}, mark)
    ```
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Container, Mapping
from typing import Any

from langchain_opa_guard.guards.claims import task_scope
from langchain_opa_guard.plain_json import NestingTooDeep, canonical_json, whole_jsonable

try:  # pragma: no branch - orjson is installed wherever langsmith is
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None  # type: ignore[assignment]

__all__ = [
    "GRANT_TTL",
    "KEY_ENV",
    "binding",
    "binding_holds",
    "decided_revision",
    "guard_scope",
    "mapping_sealed",
    "seal",
    "seal_mapping",
    "sealed",
]

logger = logging.getLogger(__name__)

KEY_ENV = "OPA_GUARD_SEAL_KEY"
"""The environment variable holding the seal key shared by a deployment's processes."""

_PROCESS_KEY = secrets.token_bytes(32)
_derived: tuple[str, bytes] | None = None


def _key() -> bytes:
    global _derived
    given = os.environ.get(KEY_ENV)
    if not given:
        return _PROCESS_KEY
    if _derived is None or _derived[0] != given:
        _derived = (given, hashlib.sha256(b"langchain-opa-guard seal\0" + given.encode()).digest())
    return _derived[1]


def seal(kind: str, value: Any) -> str:
    """The seal of ``value`` (plain JSON data) handed on as ``kind``."""
    # The common case (digests, ids, flags, a time): sorted-key JSON by orjson, whose text
    # for such plain data is one per value; anything it refuses (a lone surrogate, a key
    # of another type, a non-finite number) as canonical_json writes it.
    text: bytes | None = None
    if _orjson is not None:
        try:
            text = b"o" + _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS)
        except (TypeError, _orjson.JSONEncodeError):
            text = None
    if text is None:
        text = b"c" + canonical_json(value)
    return hmac.digest(_key(), kind.encode() + b"\0" + text, "sha256").hex()


def sealed(kind: str, value: Any, mark: Any) -> bool:
    """Whether ``mark`` is the seal of ``value`` as ``kind`` under this process's key."""
    if not isinstance(mark, str):
        return False
    try:
        expected = seal(kind, value)
    except (NestingTooDeep, RecursionError, TypeError, ValueError):
        return False
    if hmac.compare_digest(expected, mark):
        return True
    logger.warning(
        "a %s handed on in the graph does not carry the guard's seal (forged, or sealed by "
        "another process: set %s alike in every process); it grants nothing",
        kind,
        KEY_ENV,
    )
    return False


def seal_mapping(kind: str, mapping: Mapping[str, Any]) -> str | None:
    """The seal of ``mapping`` without its own ``"seal"`` entry, read as plain JSON data
    (messages and models as their fields); ``None`` when it cannot be read whole (nothing
    then verifies it)."""
    try:
        return seal(kind, _readable(mapping))
    except (NestingTooDeep, RecursionError, TypeError, ValueError):
        return None


def mapping_sealed(kind: str, mapping: Mapping[str, Any]) -> bool:
    """Whether ``mapping`` carries its seal (see :func:`seal_mapping`)."""
    try:
        readable = _readable(mapping)
    except (NestingTooDeep, RecursionError, TypeError, ValueError):
        return False
    return sealed(kind, readable, mapping.get("seal"))


def _readable(mapping: Mapping[str, Any]) -> Any:
    return whole_jsonable({k: v for k, v in mapping.items() if k != "seal"})


# -- what a hand-over is bound to --------------------------------------------------------

GRANT_TTL = 600.0
"""Seconds a hand-over that grants calls (a tools payload, the middleware's grants, the
edge's decisions) is taken after it was sealed: a replay of one captured earlier, or a run
paused longer before its tools, has its calls answered unrun or decided again."""

_CLOCK_SKEW = 60.0


def guard_scope(engine: Any, *names: Any, rules: Any = None) -> str:
    """Which guard a hand-over is for: its engine (kind, where its policy comes from, the
    decision path), ``names`` (the nodes it routes between) and ``rules`` (what it does with
    a decision: shadow mode, fail-open tools, approvals, the subject's key, the tools'
    metadata). A hand-over of a guard with another engine or other rules (a sandbox's, a
    permissive one, one in shadow mode) grants nothing here. It is the same in every
    process for the same configuration, so a run paused in one resumes in another."""
    where = getattr(engine, "url", None) or getattr(engine, "path", None) or ""
    identity = [
        type(engine).__name__,
        str(where),
        str(getattr(engine, "policy", "")),
        *map(str, names),
    ]
    text = json.dumps(identity) + "\0" + json.dumps(rules, sort_keys=True, default=_stable)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _stable(value: Any) -> Any:
    """A value JSON cannot write, written alike in every process: a set in sorted order
    (its iteration order follows the process's string hash seed), anything else its repr."""
    if isinstance(value, (set, frozenset)):
        return sorted(json.dumps(v, sort_keys=True, default=_stable) for v in value)
    return repr(value)


def decider_rules(turns: Any) -> dict[str, Any]:
    """The rules of a turn decider (:class:`~.turns.TurnDecider`) that a scope covers."""
    shadow = turns.shadow
    return {
        "shadow": shadow if isinstance(shadow, bool) else sorted(map(str, shadow)),
        "fail_open": sorted(map(str, turns.fail_open)),
        "approvals": turns.approvals,
        "user_key": turns.user_key,
        "build_input": getattr(turns.build_input, "__qualname__", repr(turns.build_input)),
        "metadata": {str(k): v for k, v in dict(turns.metadata_of).items()},
    }


def binding(scope: str, config: Mapping[str, Any] | None, revision: Any = None) -> dict[str, Any]:
    """The binding a hand-over carries under its seal: the guard's ``scope``, the thread of
    the run and the run of the graph the guard sits in (``config``), when it was made, and
    the policy revision in force then (an engine that knows its current one: see
    :func:`engine_revision`)."""
    return {
        "scope": scope,
        "thread": _thread(config),
        "graph": graph_run(config),
        "at": time.time(),
        "revision": revision,
    }


SEVERAL_REVISIONS = "(decided under several policy revisions)"
"""The revision of a turn whose calls were decided under different policies (a reload while
it was decided): never the revision in force, so its grants hold nowhere."""


def decided_revision(revisions: Any) -> str | None:
    """The one policy revision the given decisions' ``revisions`` name (``None`` among them
    is left out), :data:`SEVERAL_REVISIONS` when they name more than one, ``None`` when none:
    what a hand-over of those decisions is bound to, rather than the revision in force when
    it is written (a reload may have come in between)."""
    named = {r for r in revisions if isinstance(r, str) and r}
    if not named:
        return None
    return named.pop() if len(named) == 1 else SEVERAL_REVISIONS


def engine_revision(engine: Any) -> str | None:
    """The revision of the policy ``engine`` has loaded now, when it knows it without a
    request (``EmbeddedPolicy.revision``); else ``None``."""
    revision = getattr(engine, "revision", None)
    return revision if isinstance(revision, str) else None


def binding_holds(
    bound: Any,
    config: Mapping[str, Any] | None,
    scopes: Container[str] | None,
    ttl: float | None = GRANT_TTL,
    revision: str | None = None,
) -> bool:
    """Whether a (verified) hand-over's binding holds here: the same thread, a guard of
    ``scopes`` (``None``: any), not older than ``ttl`` seconds (``None``: no limit), and,
    where both are known, made under the policy ``revision`` in force now."""
    if not isinstance(bound, Mapping):
        return False
    made_under = bound.get("revision")
    if bound.get("thread") != _thread(config):
        reason = "another thread"
    elif scopes is not None and bound.get("scope") not in scopes:
        reason = "another guard"
    elif bound.get("graph") != graph_run(config):
        reason = "another graph (a subgraph's guard hands its calls to its own tools only)"
    elif ttl is not None and not _fresh(bound.get("at"), ttl):
        reason = f"more than {ttl:g} s ago"
    elif revision is not None and made_under is not None and made_under != revision:
        reason = "a policy no longer in force"
    else:
        return True
    logger.warning("a hand-over of the guard was made for %s; it grants nothing here", reason)
    return False


def _fresh(at: Any, ttl: float) -> bool:
    if not isinstance(at, (int, float)) or isinstance(at, bool):
        return False
    age = time.time() - at
    return -_CLOCK_SKEW <= age <= ttl


def graph_run(config: Mapping[str, Any] | None) -> str:
    """The run of the graph a LangGraph task belongs to: its checkpoint namespace without
    the task's own last part (``""`` in the outermost graph; ``"billing:<task id>"`` for
    the nodes of a subgraph that the parent's ``billing`` task runs). The guard and the
    tools node of one graph share it; two subgraphs built alike (one factory, one engine,
    the same names and rules, so the same scope) do not, nor do two runs of one subgraph
    node (outside a LangGraph task: the outermost graph's, ``""``)."""
    return (task_scope(config) or "").rpartition("|")[0]  # LangGraph's NS_SEP


def _thread(config: Mapping[str, Any] | None) -> str | None:
    thread = ((config or {}).get("configurable") or {}).get("thread_id")
    return None if thread is None else str(thread)
