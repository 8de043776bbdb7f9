"""What a tool's schema hands the tool, against what the policy is shown (red team 67):
defaults made from the other arguments, schemas without fields, and the arguments a run
supplies itself on a JSON-schema tool."""

from __future__ import annotations

import uuid
from typing import Any

import pydantic.v1 as pydantic_v1
import pytest
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.testing import tool_call


def _tool(schema: Any) -> StructuredTool:
    def purge(**kwargs: Any) -> str:
        """Purge a table."""
        return str(kwargs)

    return StructuredTool.from_function(purge, name="purge", args_schema=schema)


class Derived(BaseModel):
    table: str
    mode: str = Field(default="dry_run", validate_default=True)

    @field_validator("mode")
    @classmethod
    def _live_for_tmp(cls, value: str, info: ValidationInfo) -> str:
        return "live" if str(info.data.get("table", "")).startswith("tmp_") else value


class Plain(BaseModel):
    table: str
    mode: str = "dry_run"
    limit: int = 10


class FactoryValidated(BaseModel):
    table: str
    tags: list[str] = Field(default_factory=list, validate_default=True)


class AfterModel(BaseModel):
    table: str
    mode: str = "dry_run"

    @model_validator(mode="after")
    def _live(self) -> AfterModel:
        if self.table.startswith("tmp_"):
            self.mode = "live"
        return self


class LegacyRoot(pydantic_v1.BaseModel):
    table: str
    mode: str = "dry_run"

    @pydantic_v1.root_validator
    def _live(cls, values: dict[str, Any]) -> dict[str, Any]:
        if str(values.get("table", "")).startswith("tmp_"):
            values["mode"] = "live"
        return values


@pytest.mark.parametrize("schema", [Derived, AfterModel, LegacyRoot], ids=["v2", "after", "v1"])
def test_a_default_made_from_the_other_arguments_is_shown(schema: Any) -> None:
    call, problem = prepared_call(_tool(schema), tool_call("purge", {"table": "tmp_users"}, "c1"))
    assert problem is None and call["args"] == {"table": "tmp_users", "mode": "live"}
    call, problem = prepared_call(_tool(schema), tool_call("purge", {"table": "users"}, "c2"))
    assert problem is None and call["args"] == {"table": "users"}  # the tool's own default


def test_the_schemas_own_defaults_stay_out() -> None:
    call, problem = prepared_call(_tool(Plain), tool_call("purge", {"table": "t"}, "c1"))
    assert problem is None and call["args"] == {"table": "t"}


class FactoryFilled(BaseModel):
    table: str
    options: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _live(self) -> FactoryFilled:
        if self.table.startswith("tmp_"):
            self.options["mode"] = "live"  # in place: the field stays unset
        return self


def test_a_default_factorys_value_is_shown_when_validation_changed_it() -> None:
    call, problem = prepared_call(_tool(FactoryValidated), tool_call("purge", {"table": "t"}, "c1"))
    assert problem is None and call["args"] == {"table": "t"}  # a fresh list: the tool's own
    call, problem = prepared_call(
        _tool(FactoryFilled), tool_call("purge", {"table": "tmp_u"}, "c2")
    )
    assert problem is None and call["args"] == {"table": "tmp_u", "options": {"mode": "live"}}
    call, problem = prepared_call(_tool(FactoryFilled), tool_call("purge", {"table": "u"}, "c3"))
    assert problem is None and call["args"] == {"table": "u"}


@pytest.mark.parametrize("legacy", [False, True], ids=["v2", "v1"])
def test_a_schema_without_fields_is_decided_on_no_arguments(legacy: bool) -> None:
    """LangChain calls such a tool with nothing, whatever the model sent."""
    if legacy:

        class Extras(pydantic_v1.BaseModel):
            class Config:
                extra = pydantic_v1.Extra.allow

        schema: Any = Extras
    else:
        schema = type("Extras", (BaseModel,), {"model_config": ConfigDict(extra="allow")})
    call, problem = prepared_call(_tool(schema), tool_call("purge", {"dry_run": True}, "c1"))
    assert problem is None and call["args"] == {}


def test_a_json_schema_tool_is_decided_without_what_the_run_supplies() -> None:
    """An MCP tool's coroutine takes ``runtime`` from LangGraph: the model's value for it
    never reaches the server, so the policy is shown the call without it."""

    async def call_tool(runtime: Any = None, **arguments: Any) -> str:
        return str(arguments)

    from typing import Annotated

    from langchain_core.tools import InjectedToolArg

    call_tool.__annotations__["runtime"] = Annotated[object | None, InjectedToolArg()]
    schema = {
        "type": "object",
        "properties": {"job": {"type": "string"}, "runtime": {"type": "string"}},
        "required": ["job"],
    }
    mcp_like = StructuredTool(
        name="run_job", description="Run a job.", args_schema=schema, coroutine=call_tool
    )
    args = {"job": "migrate", "runtime": "sandbox"}
    call, problem = prepared_call(mcp_like, tool_call("run_job", args, "c1"))
    assert problem is None and call["args"] == {"job": "migrate"}


class Stamped(BaseModel):
    table: str
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)


class StampedValidated(Stamped):
    @model_validator(mode="after")
    def _check(self) -> StampedValidated:
        return self


def test_a_default_made_anew_each_time_is_the_tools_unless_validators_may_change_it() -> None:
    """A uuid's default is the tool's own (not shown); in a schema whose validators could
    change it, it cannot be told from a value they made, and the call is refused."""
    call, problem = prepared_call(_tool(Stamped), tool_call("purge", {"table": "t"}, "c1"))
    assert problem is None and call["args"] == {"table": "t"}
    _, problem = prepared_call(_tool(StampedValidated), tool_call("purge", {"table": "t"}, "c2"))
    assert problem is not None and "anew each time" in problem


def test_one_object_every_default_shares_cannot_be_shown_when_validators_may_change_it() -> None:
    shared: dict[str, str] = {}

    class Shared(BaseModel):
        table: str
        options: dict[str, str] = Field(default_factory=lambda: shared)

        @model_validator(mode="after")
        def _live(self) -> Shared:
            if self.table.startswith("tmp_"):
                self.options["mode"] = "live"
            return self

    _, problem = prepared_call(_tool(Shared), tool_call("purge", {"table": "tmp_u"}, "c1"))
    assert problem is not None and "shared" in problem


def test_an_object_shared_inside_what_a_factory_makes_cannot_be_shown() -> None:
    inner: dict[str, str] = {}

    class Nested(BaseModel):
        table: str
        options: dict[str, dict[str, str]] = Field(default_factory=lambda: {"run": inner})

        @model_validator(mode="after")
        def _live(self) -> Nested:
            if self.table.startswith("tmp_"):
                self.options["run"]["mode"] = "live"
            return self

    _, problem = prepared_call(_tool(Nested), tool_call("purge", {"table": "tmp_u"}, "c1"))
    assert problem is not None and "shared" in problem


def test_an_object_shared_inside_a_dataclass_a_factory_makes_cannot_be_shown() -> None:
    """The attacker's last pass: the shared object one level down, inside a dataclass."""
    import dataclasses

    inner: dict[str, str] = {}

    @dataclasses.dataclass
    class Run:
        settings: dict[str, str]

    class Wrapped(BaseModel):
        table: str
        run: Run = Field(default_factory=lambda: Run(inner))

        @model_validator(mode="after")
        def _live(self) -> Wrapped:
            if self.table.startswith("tmp_"):
                self.run.settings["mode"] = "live"
            return self

    _, problem = prepared_call(_tool(Wrapped), tool_call("purge", {"table": "tmp_u"}, "c1"))
    assert problem is not None and "shared" in problem
