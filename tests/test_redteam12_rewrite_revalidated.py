"""Red team 12: a policy's argument rewrite hands the tool the validated view, validated again.

The policy decides a call on its arguments as the tool's schema validates them (the view),
and the README says why the guard never hands the tool that view: a validator applied to its
own output (one that decodes a path) would give another value. A policy's argument rewrite
does exactly that. A rewrite is written from ``input.tool.args`` (the README's own example
keeps ``query`` and caps ``limit``), so it echoes the *validated* values, and "the rewritten
call is what runs": the tool validates them once more.

Here ``path`` is percent-decoded by its schema. The model sends ``%252E%252E%252Fsecrets``
with ``limit`` 500: the policy sees ``%2E%2E%2Fsecrets`` (no ``../``), allows it and caps
``limit`` at 100, echoing ``path``; the tool decodes that once more and reads ``../secrets``,
a path the policy denies whenever it is shown it (the controls).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, field_validator
from surface_kit import SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine

POLICY = """package redteam12rewrite

import rego.v1

deny contains "no parent directories" if contains(input.tool.args.path, "../")

default decision := {"allow": true, "reasons": []}

decision := {"allow": false, "reasons": [{"code": "rt12", "message": m} | some m in deny]} if {
	count(deny) > 0
}

capped := {"path": input.tool.args.path, "limit": 100}

decision := {"allow": true, "reasons": [], "args": capped} if {
	count(deny) == 0
	input.tool.args.limit > 100
}
"""

USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    folder: Path = tmp_path_factory.mktemp("redteam12rewrite")
    (folder / "redteam12rewrite.rego").write_text(POLICY)
    return EmbeddedPolicy(folder, policy="redteam12rewrite/decision")


class ReadArgs(BaseModel):
    path: str
    limit: int

    @field_validator("path")
    @classmethod
    def decoded(cls, value: str) -> str:
        """Paths arrive URL-encoded from the web front end."""
        return unquote(value)


def read_tools(done: list[Any]) -> list[BaseTool]:
    def read_file(path: str, limit: int) -> str:
        """Read up to `limit` lines of a file under the workspace."""
        done.append(path)
        return f"read {path}"

    return [StructuredTool.from_function(read_file, name="read_file", args_schema=ReadArgs)]


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("path", ["../secrets", "%2E%2E%2Fsecrets"])
def test_control_a_parent_path_is_denied(engine: PolicyEngine, surface: str, path: str) -> None:
    done: list[Any] = []
    args = {"path": path, "limit": 500}
    answer, _ = run_turn(
        surface, engine, read_tools(done), "read_file", args, "invoke", context={"user": USER}
    )
    assert done == [], answer.content


@pytest.mark.parametrize("surface", SURFACES)
def test_control_a_plain_path_is_rewritten_and_runs(engine: PolicyEngine, surface: str) -> None:
    done: list[Any] = []
    args = {"path": "notes.txt", "limit": 500}
    answer, _ = run_turn(
        surface, engine, read_tools(done), "read_file", args, "invoke", context={"user": USER}
    )
    assert done == ["notes.txt"], answer.content


@pytest.mark.parametrize("surface", SURFACES)
def test_a_rewrite_is_not_validated_twice(engine: PolicyEngine, surface: str) -> None:
    done: list[Any] = []
    args = {"path": "%252E%252E%252Fsecrets", "limit": 500}
    answer, _ = run_turn(
        surface, engine, read_tools(done), "read_file", args, "invoke", context={"user": USER}
    )
    assert "../secrets" not in done, (
        f"the policy allowed read_file({args}) seeing path '%2E%2E%2Fsecrets' and rewrote "
        f"limit; the tool read {done} ({answer.content!r:.200})"
    )
