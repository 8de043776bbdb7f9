"""Red team 10: keys LangChain hands the tool that the policy's view does not hold as handed.

LangChain's ``BaseTool._parse_input`` builds the tool's keyword arguments from the keys of
the validated schema's *dump* (``model_dump()`` for Pydantic v2, ``.dict()`` for
``pydantic.v1``), each with ``getattr(result, key)``, when the key is in the model's input,
was set through an alias, or has an explicit default. ``schema_views.schema_view`` builds
the policy's view from the schema's declared fields instead. Where the two differ, the
policy decides other values than the tool runs with:

- a ``pydantic.v1`` schema with ``Field(..., exclude=True)`` or ``Config.fields = {name:
  {"exclude": True}}``: ``.dict()`` leaves the field out, so the tool runs with its own
  default (``dry_run=False``) while the policy decided the model's ``dry_run=True``
  (``_legacy_fields`` never checks ``exclude``; red team 9's mend covered v2 only);
- a Pydantic v2 schema that overrides ``model_dump`` (to keep a flag out of audit dumps):
  not a ``model_serializer``, so it is not refused, and the same ``dry_run`` swap follows;
- a ``@computed_field``: ``model_dump()`` holds it, so when the model sends a key of its
  name the tool is handed the computed value; with ``extra="allow"`` the view shows the
  model's own value for that key (an extra), without it the view leaves the key out;
- a ``default_factory`` that takes the validated data: the tool gets the derived default
  (LangChain hands explicit defaults), the view leaves defaults out.

Each case is a call the policy denies when it is shown the value the tool runs with (see
the controls), run through every guard surface on the embedded engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic.v1 as pydantic_v1
import pytest
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict, Field, computed_field
from surface_kit import SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine
from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.plain_json import jsonable

POLICY = """package redteam10

import rego.v1

deny contains "nothing may go to evil.example" if {
	walk(input.tool.args, [_, v])
	is_string(v)
	contains(v, "evil.example")
}

deny contains "deletions only as a dry run" if {
	startswith(input.tool.name, "delete_")
	not input.tool.args.dry_run == true
}

decision := {
	"allow": count(deny) == 0,
	"reasons": [{"code": "rt10", "message": m} | some m in deny],
}
"""

USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    folder: Path = tmp_path_factory.mktemp("redteam10")
    (folder / "redteam10.rego").write_text(POLICY)
    return EmbeddedPolicy(folder, policy="redteam10/decision")


# -- schemas a tool author might write ---------------------------------------------------


class LegacyDeleteArgs(pydantic_v1.BaseModel):
    path: str
    dry_run: bool = pydantic_v1.Field(True, exclude=True, description="kept out of audit dumps")


class LegacyConfigDeleteArgs(pydantic_v1.BaseModel):
    path: str
    dry_run: bool = True

    class Config:
        fields = {"dry_run": {"exclude": True}}  # noqa: RUF012 - pydantic.v1's own form


class DumpedDeleteArgs(BaseModel):
    path: str
    dry_run: bool = True

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """Audit dumps leave the flag out."""
        dumped = super().model_dump(**kwargs)
        dumped.pop("dry_run", None)
        return dumped


class OpenSendArgs(BaseModel):
    model_config = ConfigDict(extra="allow")
    host: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def target(self) -> str:
        return f"https://{self.host}.example/drop"


class SendArgs(BaseModel):
    host: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def target(self) -> str:
        return f"https://{self.host}.example/drop"


class FactorySendArgs(BaseModel):
    host: str
    target: str = Field(default_factory=lambda data: f"https://{data['host']}.example/drop")


def dumped_tools(done: list[Any]) -> list[BaseTool]:
    def delete_path(path: str, dry_run: bool = False) -> str:
        """Delete a path (a dry run only lists it)."""
        done.append(("delete", path, dry_run))
        return "listed" if dry_run else "deleted"

    def send(host: str, target: str = "https://ok.example/inbox") -> str:
        """Send the report."""
        done.append(("send", target))
        return "sent"

    def tool(fn: Any, name: str, schema: type) -> BaseTool:
        return StructuredTool.from_function(fn, name=name, args_schema=schema)

    return [
        tool(delete_path, "delete_legacy", LegacyDeleteArgs),
        tool(delete_path, "delete_legacy_config", LegacyConfigDeleteArgs),
        tool(delete_path, "delete_dumped", DumpedDeleteArgs),
        tool(send, "send_open", OpenSendArgs),
        tool(send, "send_computed", SendArgs),
        tool(send, "send_factory", FactorySendArgs),
    ]


CASES: list[tuple[str, dict[str, Any]]] = [
    ("delete_legacy", {"path": "/srv/data", "dry_run": True}),
    ("delete_legacy_config", {"path": "/srv/data", "dry_run": True}),
    ("delete_dumped", {"path": "/srv/data", "dry_run": True}),
    ("send_open", {"host": "evil", "target": "https://ok.example/inbox"}),
    ("send_computed", {"host": "evil", "target": "https://ok.example/inbox"}),
    ("send_factory", {"host": "evil"}),
]
IDS = [
    "v1-field-exclude",
    "v1-config-exclude",
    "v2-model-dump-override",
    "computed-field-over-extra",
    "computed-field-key",
    "data-default-factory",
]


def _ran_as_decided(ran: list[Any]) -> bool:
    """What the policy allows: a deletion only as a dry run, a send never to evil.example."""
    for entry in ran:
        if entry[0] == "delete" and entry[2] is not True:
            return False
        if entry[0] == "send" and "evil.example" in entry[1]:
            return False
    return True


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(("name", "args"), CASES, ids=IDS)
def test_a_call_runs_only_as_the_policy_decided_it(
    engine: PolicyEngine, surface: str, name: str, args: dict[str, Any]
) -> None:
    done: list[Any] = []
    answer, _ = run_turn(
        surface, engine, dumped_tools(done), name, args, "invoke", context={"user": USER}
    )
    assert _ran_as_decided(done), (
        f"the policy allowed {name}({args}) on a view that is not what the tool got; "
        f"the tool ran with {done} ({answer.content!r:.200})"
    )


def test_the_rules_deny_the_values_when_shown_them(engine: PolicyEngine) -> None:
    """Controls: the values the tool ran with above, given plainly, are denied."""

    def delete_path(path: str, dry_run: bool = False) -> str:
        """Delete a path."""
        done.append("delete")
        return "deleted"

    def send(host: str, target: str) -> str:
        """Send the report."""
        done.append("send")
        return "sent"

    controls: list[tuple[Any, str, dict[str, Any]]] = [
        (delete_path, "delete_plain", {"path": "/srv/data", "dry_run": False}),
        (delete_path, "delete_plain", {"path": "/srv/data"}),
        (send, "send_plain", {"host": "evil", "target": "https://evil.example/drop"}),
    ]
    for fn, name, args in controls:
        done: list[str] = []
        tools = [StructuredTool.from_function(fn, name=name)]
        answer, _ = run_turn("node", engine, tools, name, args, "invoke", context={"user": USER})
        assert done == [] and answer.status == "error", (name, answer.content)


@pytest.mark.parametrize(("name", "args"), CASES, ids=IDS)
def test_the_view_holds_the_keys_and_values_the_tool_is_handed(
    name: str, args: dict[str, Any]
) -> None:
    """What the policy reads of the prepared call has every key LangChain hands the tool,
    with the value it hands, and no key it does not hand (a refusal before the policy is
    fine)."""
    tool = next(t for t in dumped_tools([]) if t.name == name)
    call, problem = prepared_call(
        tool, {"name": name, "args": dict(args), "id": "c1", "type": "tool_call"}
    )
    if problem is not None:
        return
    handed = tool._parse_input(dict(args), "c1")
    assert isinstance(handed, dict)
    assert jsonable(call["args"]) == jsonable(handed), (call["args"], handed)
