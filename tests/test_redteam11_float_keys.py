"""Red team 11: a mapping keyed by numbers, two of whose keys read alike as text.

A schema field ``dict[float, str]`` (a reminder offset in hours -> who to notify) validates
the model's keys ``"NaN"`` and ``"nan"`` to two distinct keys (``float("nan")`` equals
nothing, itself included, so a dict holds both). The tool is handed both entries. The
policy input writes an object key as its text, and both read ``"nan"``: one entry overwrites
the other, so the policy never sees the first recipient. ``arguments_problem`` refuses a
non-finite *value*, never a non-finite *key*.

Each case is a call the policy denies when it is shown every entry the tool gets (see the
control).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel
from surface_kit import SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine
from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.plain_json import jsonable

POLICY = """package redteam11keys

import rego.v1

deny contains "nothing may go to evil.example" if {
	walk(input.tool.args, [_, v])
	is_string(v)
	contains(v, "evil.example")
}

decision := {
	"allow": count(deny) == 0,
	"reasons": [{"code": "rt11", "message": m} | some m in deny],
}
"""

USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    folder: Path = tmp_path_factory.mktemp("redteam11keys")
    (folder / "redteam11keys.rego").write_text(POLICY)
    return EmbeddedPolicy(folder, policy="redteam11keys/decision")


class RemindArgs(BaseModel):
    notify: dict[float, str]


def remind_tools(done: list[Any]) -> list[BaseTool]:
    def remind(notify: dict[float, str]) -> str:
        """Send reminders: hours before the meeting -> address to notify."""
        done.extend(notify.values())
        return f"{len(notify)} reminders set"

    return [StructuredTool.from_function(remind, name="remind", args_schema=RemindArgs)]


ARGS = {"notify": {"NaN": "boss@evil.example", "nan": "me@ok.example"}}


@pytest.mark.parametrize("surface", SURFACES)
def test_every_entry_the_tool_gets_is_decided(engine: PolicyEngine, surface: str) -> None:
    done: list[Any] = []
    answer, _ = run_turn(
        surface, engine, remind_tools(done), "remind", ARGS, "invoke", context={"user": USER}
    )
    assert not any("evil.example" in str(d) for d in done), (
        f"the policy allowed remind({ARGS}) seeing one entry; the tool notified {done} "
        f"({answer.content!r:.200})"
    )


def test_the_view_holds_every_entry_the_tool_is_handed() -> None:
    tool = remind_tools([])[0]
    call, problem = prepared_call(
        tool, {"name": "remind", "args": dict(ARGS), "id": "c1", "type": "tool_call"}
    )
    if problem is not None:
        return
    handed = tool._parse_input(dict(ARGS), "c1")
    assert isinstance(handed, dict)
    shown = jsonable(call["args"])["notify"]
    assert sorted(shown.values()) == sorted(handed["notify"].values()), (shown, handed)


def test_the_rule_denies_the_entry_when_shown_it(engine: PolicyEngine) -> None:
    """Control: the hidden entry, given on its own, is denied."""
    done: list[Any] = []
    answer, _ = run_turn(
        "node",
        engine,
        remind_tools(done),
        "remind",
        {"notify": {"1": "boss@evil.example"}},
        "invoke",
        context={"user": USER},
    )
    assert done == [] and answer.status == "error", answer.content
