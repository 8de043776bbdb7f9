"""Red team 40: attacks on the embedded engine's one-evaluation turns that did NOT break it,
pinned. In each, ``decide_many`` must answer every call exactly as ``decide`` answers it
alone (same allow, error, reasons and result), or fail closed.

Tried: decisions undefined for some calls (the positional list comes back shorter);
decisions depending on ``input.tool.call_id`` or on the position in ``input.turn``; a
decision that is a set, or a bare boolean; results alike in ``==`` but not in JSON type
(true / 1 / 1.0) sharing a ``Decision``; a trap (division by zero) for one call; ``turn``
missing, not a list, holding non-dicts, or missing a call; duplicate call ids; tools that are
lists, ``OrderedDict``s, other ``Mapping``s, or have a non-string ``call_id``; shared parts
that differ only in JSON type; a 3000-call turn; a conflict error for one call; threads
deciding turns while another reloads the policy back and forth.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from opa_process import opa_binary

from langchain_opa_guard import EmbeddedPolicy

POLICIES = {
    "partial": 'decision := {"allow": input.tool.args.v == 1, "reasons": []} if '
    "input.tool.args.v != 2\n",
    "by_id": 'decision := {"allow": input.tool.call_id == "b", "reasons": []}\n',
    "by_position": 'decision := {"allow": input.turn[0].call_id == input.tool.call_id, '
    '"reasons": []}\n',
    "set": 'decision contains "x" if input.tool.args.v == 1\n',
    "boolean": "decision := input.tool.args.v == 1\n",
    "typed": 'decision := {"allow": true, "reasons": [], "level": input.tool.args.v}\n',
    "trap": 'decision := {"allow": 1 / input.tool.args.v > 0, "reasons": []}\n',
}


def _engine(tmp_path: Path, name: str, source: str) -> EmbeddedPolicy:
    root = tmp_path / name
    root.mkdir()
    (root / "policy.rego").write_text("package agent.authz\n\n" + source)
    return EmbeddedPolicy(root, opa=opa_binary(), cache_dir=tmp_path / "cache")


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[dict[str, EmbeddedPolicy]]:
    made = {name: _engine(tmp_path, name, source) for name, source in POLICIES.items()}
    for engine in made.values():
        assert engine._state.turn_batch is not None
    yield made
    for engine in made.values():
        engine.close()


def _call(call_id: str, v: Any) -> dict[str, Any]:
    return {"name": "x", "args": {"v": v}, "call_id": call_id}


def _docs(turn: Any, calls: list[Any], **extra: Any) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"version": 1, "user": {}, "context": {}, "history": []}
    if turn is not ...:
        base["turn"] = turn
    return [{**base, **extra, "tool": call} for call in calls]


def _sig(decision: Any) -> tuple[Any, ...]:
    return (decision.allow, decision.error, decision.reasons, decision.result)


def _same_as_alone(engine: EmbeddedPolicy, docs: list[Any]) -> None:
    alone = [_sig(engine.decide(doc)) for doc in docs]
    many = engine.decide_many(docs)
    assert len(many) == len(docs)
    assert [_sig(d) for d in many] == alone


A, B, C = _call("a", 1), _call("b", 2), _call("c", True)


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("with_turn", [True, False])
def test_a_batched_turn_decides_each_call_as_alone(
    engines: dict[str, EmbeddedPolicy], name: str, with_turn: bool
) -> None:
    calls = [A, B, C, _call("d", 0)]
    _same_as_alone(engines[name], _docs(calls if with_turn else ..., calls))


def test_results_alike_in_eq_but_not_in_json_type_are_not_shared(
    engines: dict[str, EmbeddedPolicy],
) -> None:
    calls = [_call("a", True), _call("b", 1), _call("c", 1.0), _call("d", False), _call("e", 0)]
    decisions = engines["typed"].decide_many(_docs(calls, calls))
    assert [d.result["level"] for d in decisions] == [True, 1, 1.0, False, 0]
    assert [type(d.result["level"]) for d in decisions] == [bool, int, float, bool, int]


class _Tool(Mapping[str, Any]):
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@pytest.mark.parametrize(
    "docs",
    [
        _docs({"a": A}, [A, B]),
        _docs([1, "a", None, A, B], [A, B]),
        _docs([A], [A, B]),
        _docs([], [A, B]),
        _docs([A, _call("a", 2)], [A, _call("a", 2)]),
        [{"version": 1, "turn": [A], "tool": [1]}, {"version": 1, "turn": [A], "tool": A}],
        _docs([A, B], [collections.OrderedDict(A), B]),
        _docs([A, B], [_Tool(A), B]),
        _docs([A, B], [{**A, "call_id": 1}, B]),
        [
            {**_docs([A, B], [A])[0], "user": {"id": 1}},
            {**_docs([A, B], [B])[0], "user": {"id": True}},
        ],
    ],
    ids=[
        "turn-not-a-list",
        "turn-non-dicts",
        "call-not-in-turn",
        "empty-turn",
        "duplicate-ids",
        "tool-a-list",
        "ordered-dict-tool",
        "mapping-tool",
        "int-call-id",
        "shared-differs-in-type",
    ],
)
def test_odd_turns_are_decided_as_alone(engines: dict[str, EmbeddedPolicy], docs: Any) -> None:
    _same_as_alone(engines["partial"], docs)


def test_a_huge_turn_is_decided_in_order(engines: dict[str, EmbeddedPolicy]) -> None:
    calls = [_call(f"c{i}", i % 2) for i in range(3000)]
    decisions = engines["boolean"].decide_many(_docs(calls, calls))
    assert [d.allow for d in decisions] == [i % 2 == 1 for i in range(3000)]
    assert all(d.error is None for d in decisions)


def test_a_conflict_for_one_call_fails_the_turn_closed(tmp_path: Path) -> None:
    engine = _engine(
        tmp_path,
        "conflict",
        'decision := {"allow": true, "reasons": []} if input.tool.args.v >= 1\n'
        'decision := {"allow": false, "reasons": []} if input.tool.args.v >= 2\n',
    )
    calls = [A, B, _call("d", 0)]
    decisions = engine.decide_many(_docs(calls, calls))
    assert len(decisions) == 3
    assert not any(d.allow for d in decisions)
    assert engine.decide(_docs(calls, calls)[1]).error is not None


def test_a_turn_is_never_decided_partly_on_each_policy_across_reloads(tmp_path: Path) -> None:
    root = tmp_path / "flip"
    root.mkdir()
    allow_all = 'package agent.authz\n\ndecision := {"allow": true, "reasons": ["A"]}\n'
    # Undefined for every other call: the turn takes the one-by-one path under it.
    gaps = (
        "package agent.authz\n\n"
        'decision := {"allow": false, "reasons": ["B"]} if '
        'to_number(trim_left(input.tool.call_id, "c")) % 2 == 0\n'
    )
    (root / "policy.rego").write_text(allow_all)
    engine = EmbeddedPolicy(root, opa=opa_binary(), cache_dir=tmp_path / "cache", timeout=5)
    calls = [_call(f"c{i}", i) for i in range(40)]
    docs = _docs(calls, calls)
    stop = threading.Event()
    bad: list[Any] = []

    def decide() -> None:
        while not stop.is_set():
            decisions = engine.decide_many(docs)
            assert len(decisions) == len(docs)
            seen = {d.reasons for d in decisions if d.error is None}
            if len(seen) > 1 or (("A",) in seen and any(d.error for d in decisions)):
                bad.append([_sig(d) for d in decisions])
            if any(d.error not in (None, "undefined") for d in decisions):
                bad.append([_sig(d) for d in decisions])

    workers = [threading.Thread(target=decide) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for i in range(12):
            (root / "policy.rego").write_text(gaps if i % 2 == 0 else allow_all)
            engine.reload()
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        engine.close()
    assert bad == []


def test_one_undefined_call_in_a_huge_turn_leaves_the_others_decided(
    engines: dict[str, EmbeddedPolicy],
) -> None:
    """One call without a decision in a 3000-call turn: the list comes back one short, and
    the keyed entrypoint tells which call it is in one more guest call. (Red team 40 saw
    the turn decided again call by call, where most calls ran out of time and were denied.)"""
    engine = engines["partial"]
    calls = [_call(f"c{i}", 2 if i == 1234 else i % 2) for i in range(3000)]
    evaluations = 0
    evaluate = engine._evaluate

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal evaluations
        evaluations += 1
        return evaluate(*args, **kwargs)

    engine._evaluate = counted  # type: ignore[method-assign]
    decisions = engine.decide_many(_docs(calls, calls))
    assert evaluations == 2
    assert [d.error for d in decisions].count(None) == 2999
    assert decisions[1234].error == "undefined"
    assert [d.allow for i, d in enumerate(decisions) if i != 1234] == [
        i % 2 == 1 for i in range(3000) if i != 1234
    ]


def test_a_reload_between_a_short_list_and_its_second_look_decides_the_turn_on_one_policy(
    tmp_path: Path,
) -> None:
    """The first evaluation of the turn comes back one short (a call without a decision);
    the policy is reloaded before the keyed entrypoint is asked which call that was. The
    decisions must all come from one policy, never the old one's list for some calls and the
    new one's for others: here the whole turn ends decided on the new policy, which allows
    nothing (the second look alone answers, and a reload makes the turn start again)."""
    permissive = POLICIES["partial"]
    strict = 'decision := {"allow": false, "reasons": ["strict"]} if input.tool.args.v != 2\n'
    engine = _engine(tmp_path, "reloaded", permissive)
    source = tmp_path / "reloaded" / "policy.rego"
    evaluate = engine._evaluate
    seen: list[Any] = []

    def reload_after_the_first(*args: Any, **kwargs: Any) -> Any:
        out = evaluate(*args, **kwargs)
        seen.append(out[0])
        if len(seen) == 1:
            source.write_text("package agent.authz\n\n" + strict)
            engine.reload()
        return out

    engine._evaluate = reload_after_the_first  # type: ignore[method-assign]
    calls = [_call("a", 1), _call("b", 2), _call("c", 1)]
    decisions = engine.decide_many(_docs(calls, calls))
    assert isinstance(seen[0], list) and len(seen[0]) == 2  # the short list, then the reload
    assert [d.allow for d in decisions] == [False, False, False]
    assert decisions[0].reasons == ("strict",) and decisions[2].reasons == ("strict",)
    assert decisions[1].error == "undefined"
    engine.close()
