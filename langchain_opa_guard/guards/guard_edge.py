"""The guard node's decisions carried from its edge (:meth:`PolicyGuardNode.edge`).

With the guard as the reasoning node's conditional edge, a turn whose calls are all allowed
goes to the tools in the step that proposed it; any other turn (a denial, an approval, a
rewrite, a loop to stop) goes on to the guard node with the decisions already made, in the
node's own ``Send`` payload, so that each call is decided (logged, traced, counted) once.
The payload is plain data: it survives a checkpoint; it is sealed (:mod:`.seals`), so
that a graph's caller cannot hand the guard node decisions of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from langchain_opa_guard.decision import Decision
from langchain_opa_guard.guards.execution import call_digest
from langchain_opa_guard.guards.live_turn import fingerprint
from langchain_opa_guard.guards.planning import Turn
from langchain_opa_guard.guards.seals import binding_holds, engine_revision, seal, sealed
from langchain_opa_guard.plain_json import NestingTooDeep

ROUTED_KEY = "__opa_guard_routed__"
"""Key of the edge's decisions in the guard node's own ``Send`` payload."""

_FIELDS = tuple(f.name for f in fields(Decision))


def decided_calls(turn: Turn) -> list[list[str]]:
    """The calls of ``turn`` the engine decides, in order: each one's id and the digest of
    its name and arguments (decisions are for exactly those calls)."""
    return [
        [str(call.get("id")), call_digest(call.get("name"), call.get("args"))]
        for call, document in zip(turn.calls, turn.inputs, strict=True)
        if document is not None
    ]


def routed(
    turn: Turn, decided: Sequence[Decision], bound: Mapping[str, Any], turn_id: str | None
) -> dict[str, Any]:
    """The edge's decisions of ``turn``, as plain data for the guard node (``bound``: the
    guard, thread and time they are for, see :func:`.seals.binding`; ``turn_id``: the
    decided turn, :func:`~.claims.decided_turn` of the edge's task, under which its calls
    run once however often the decisions are delivered)."""
    carried = {
        "message_id": turn.ai_message.id,
        "calls": decided_calls(turn),
        "decisions": [_plain(decision) for decision in decided],
        "binding": dict(bound),
        "turn": turn_id,
        "before": fingerprint(turn.messages[: turn.ai_index], turn.ai_message),
    }
    # A graph's caller can Send to the guard node with any payload: only decisions that
    # carry the guard's seal are taken (see seals).
    try:
        carried["seal"] = seal(ROUTED_KEY, carried)
    except (NestingTooDeep, RecursionError, TypeError, ValueError):
        carried["seal"] = None  # the guard node decides the turn afresh
    return carried


def routed_decisions(
    state: Any, turn: Turn, config: Mapping[str, Any] | None, scope: str, engine: Any
) -> list[Decision] | None:
    """The decisions the edge made for exactly this turn, or ``None`` (decide it afresh):
    none were carried, or not sealed, or made for another guard, thread, message or calls,
    or too long ago."""
    carried = state.get(ROUTED_KEY) if isinstance(state, Mapping) else None
    if not isinstance(carried, Mapping):
        return None
    decisions = carried.get("decisions")
    unsealed = {k: v for k, v in carried.items() if k != "seal"}
    if not sealed(ROUTED_KEY, unsealed, carried.get("seal")):
        return None
    if not binding_holds(carried.get("binding"), config, {scope}, revision=engine_revision(engine)):
        return None
    if (
        carried.get("message_id") != turn.ai_message.id
        or carried.get("calls") != decided_calls(turn)
        or not isinstance(decisions, list)
        or len(decisions) != len(carried["calls"])
    ):
        return None
    try:
        return [_decision(item) for item in decisions]
    except (TypeError, ValueError):
        return None


def routed_turn(state: Any) -> str | None:
    """The decided turn the edge's decisions carry (read once they were accepted)."""
    carried = state.get(ROUTED_KEY) if isinstance(state, Mapping) else None
    turn = carried.get("turn") if isinstance(carried, Mapping) else None
    return turn if isinstance(turn, str) else None


def without_routed(state: Any) -> Any:
    """The state without the edge's decisions (they are for this node only)."""
    if isinstance(state, Mapping) and ROUTED_KEY in state:
        return {k: v for k, v in state.items() if k != ROUTED_KEY}
    return state


def _plain(decision: Decision) -> dict[str, Any]:
    item = {name: getattr(decision, name) for name in _FIELDS}
    item["reasons"] = list(decision.reasons)
    item["codes"] = list(decision.codes)
    item["error"] = None if decision.error is None else str(decision.error)
    item["args"] = None if decision.args is None else dict(decision.args)
    return item


def _decision(item: Any) -> Decision:
    if not isinstance(item, Mapping) or set(item) != set(_FIELDS):
        raise ValueError("not a decision")
    values = dict(item)
    values["reasons"] = tuple(values["reasons"])
    values["codes"] = tuple(values["codes"])
    return Decision(**values)
