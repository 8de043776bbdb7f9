"""The record of handed-on turns (``guards/handed_on.py``) on its own: what it keys a turn
by, and when a turn stops being out."""

from __future__ import annotations

from typing import Any

from langchain_opa_guard.guards.handed_on import came_back, hand_on, still_out, turn_form
from langchain_opa_guard.testing import tool_call

CALLS = [tool_call("pay", {"amount": 5}, "p1"), tool_call("read", {"item": "a"}, "r1")]


def task(thread: Any, task_id: str, step: int = 3, **configurable: Any) -> dict[str, Any]:
    return {
        "configurable": {"thread_id": thread, "checkpoint_ns": f"guard:{task_id}", **configurable},
        "metadata": {"langgraph_step": step},
    }


def test_a_turn_is_out_until_every_call_came_back_and_only_for_other_tasks() -> None:
    form = turn_form(CALLS)
    hand_on("g", task("t-out", "A"), "m1", {form}, ["p1", "r1"], 1)
    assert still_out("g", task("t-out", "B", 4), "m1", form, 1)
    assert not still_out("g", task("t-out", "A"), "m1", form, 1)  # the task that decided it
    assert not still_out("other-guard", task("t-out", "B", 4), "m1", form, 1)
    assert not still_out("g", task("t-elsewhere", "B", 4), "m1", form, 1)
    came_back(task("t-out", "tools-1"), "m1", ["p1"])
    assert still_out("g", task("t-out", "B", 4), "m1", form, 1)
    came_back(task("t-out", "tools-2"), "m1", ["r1"])
    assert not still_out("g", task("t-out", "B", 4), "m1", form, 1)


def test_another_form_of_the_turn_is_another_turn() -> None:
    form = turn_form(CALLS)
    hand_on("g", task("t-form", "A"), "m1", {form}, ["p1"], 1)
    edited = [tool_call("pay", {"amount": 5000}, "p1"), CALLS[1]]
    assert not still_out("g", task("t-form", "B", 4), "m1", turn_form(edited), 1)
    # Proposed again later in the conversation (more messages before it): a new turn.
    assert not still_out("g", task("t-form", "B", 4), "m1", form, 2)
    # Messages removed or trimmed before it: the same turn.
    assert still_out("g", task("t-form", "B", 4), "m1", form, 0)
    assert still_out("g", task("t-form", "B", 4), "m1", form, 1)


def test_a_replay_and_a_run_without_thread_are_never_held() -> None:
    form = turn_form(CALLS)
    hand_on("g", task("t-replay", "A"), "m1", {form}, ["p1"], 1)
    replay = task("t-replay", "B", 4, __pregel_replay_state=object())
    assert not still_out("g", replay, "m1", form, 1)
    hand_on("g", task(None, "A"), "m2", {form}, ["p1"], 1)
    assert not still_out("g", task(None, "B", 4), "m2", form, 1)


def test_a_settled_hand_over_is_forgotten() -> None:
    form = turn_form(CALLS)
    hand_on("g", task("t-settled", "A"), "m1", {form}, ["p1"], 1)
    hand_on("g", task("t-settled", "T", 4), "m1", {form}, [], 1)  # every call answered here
    assert not still_out("g", task("t-settled", "B", 4), "m1", form, 1)
