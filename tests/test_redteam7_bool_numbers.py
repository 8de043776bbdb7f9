"""Red team 7: ``True == 1`` lets the policy decide a bool where the tool runs with a number.

``prepared_call`` reads the model's arguments through the tool's schema and, when the view
``==`` the arguments, decides the model's arguments as they are. Python's ``==`` holds
between ``True`` and ``1`` (and ``False`` and ``0``), and Pydantic's lax mode reads ``True``
for an ``int`` field as ``1`` and ``1`` for a ``bool`` field as ``True``. So:

- ``delete_user(user_id=True)``: the policy sees ``user_id: true`` (its rule
  ``user_id == 1`` does not hold), the tool deletes user ``1``;
- ``delete_repo(name, force=1)``: the policy sees ``force: 1`` (its rule ``force == true``
  does not hold), the tool runs with ``force=True``.

Rego tells ``true`` and ``1`` apart, as JSON does. The engine module already has the
comparison the guard needs (``engines.engine.same_json``: equal, and equal in ``repr``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool, StructuredTool
from surface_kit import MODES, SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine
from langchain_opa_guard.guards.prepared_calls import prepared_call

POLICY = """package redteam7

decision := {"allow": false, "reasons": [{"code": "admin", "message": "user 1 is the admin"}]} if {
	input.tool.name == "delete_user"
	input.tool.args.user_id == 1
} else := {"allow": false, "reasons": [{"code": "force", "message": "no forced deletes"}]} if {
	input.tool.name == "delete_repo"
	input.tool.args.force == true
} else := {"allow": true, "reasons": []}
"""

USER = {"id": "u-1", "role": "tester"}


@pytest.fixture
def engine(tmp_path: Path) -> PolicyEngine:
    (tmp_path / "redteam7.rego").write_text(POLICY)
    return EmbeddedPolicy(tmp_path, policy="redteam7/decision")


def admin_tools(done: list[Any]) -> list[BaseTool]:
    def delete_user(user_id: int) -> str:
        """Delete a user."""
        done.append(("delete_user", user_id))
        return "deleted"

    def delete_repo(name: str, force: bool = False) -> str:
        """Delete a repository."""
        done.append(("delete_repo", name, force))
        return "deleted"

    return [StructuredTool.from_function(delete_user), StructuredTool.from_function(delete_repo)]


def test_the_policy_denies_the_plain_forms(engine: PolicyEngine) -> None:
    """The rules themselves work: the number 1 and the bool true are denied."""
    for name, args in (
        ("delete_user", {"user_id": 1}),
        ("delete_repo", {"name": "r", "force": True}),
    ):
        done: list[Any] = []
        answer, _ = run_turn(
            "node", engine, admin_tools(done), name, args, "invoke", context={"user": USER}
        )
        assert done == [] and answer.status == "error", (name, answer.content)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("delete_user", {"user_id": True}),
        ("delete_repo", {"name": "prod", "force": 1}),
    ],
    ids=["true-for-an-int", "1-for-a-bool"],
)
def test_a_bool_for_a_number_is_decided_as_the_tool_reads_it(
    engine: PolicyEngine, surface: str, mode: str, name: str, args: dict[str, Any]
) -> None:
    done: list[Any] = []
    answer, _ = run_turn(
        surface, engine, admin_tools(done), name, args, mode, context={"user": USER}
    )
    assert done == [], f"the policy allowed {name}({args}) and the tool ran {done}"
    assert answer.status == "error"


def test_prepared_call_gives_the_policy_the_type_the_tool_reads() -> None:
    tool = admin_tools([])[0]
    view, problem = prepared_call(
        tool, {"name": "delete_user", "args": {"user_id": True}, "id": "c", "type": "tool_call"}
    )
    assert problem is None
    assert type(view["args"]["user_id"]) is int, view
