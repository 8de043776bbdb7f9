"""Which tools read the same arguments alike every time, so a granted call is not read twice.

A tool whose schema calls no code of the application's reads the same arguments the same
way every time: where it runs, the grant holding its arguments is enough. Any schema that
runs the application's code (validators, default factories, post-init hooks, computed
fields, custom serializers, a tool that reads its input its own way, a Pydantic v1 schema)
is read again right before the tool runs, and a call that reads differently never runs.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, NamedTuple

import pydantic.v1 as pydantic_v1
import pytest
from langchain_core.tools import StructuredTool, Tool
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainSerializer,
    computed_field,
    field_validator,
    model_validator,
)

from langchain_opa_guard.demo import customer_db_tools
from langchain_opa_guard.guards.decided_views import (
    ALIKE,
    granted_view,
    view_digest,
    view_refusal,
)
from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.guards.tool_readings import reading_mark, reads_alike
from langchain_opa_guard.testing import tool_call


def send(**kwargs: Any) -> str:
    return "sent"


def with_schema(schema: Any) -> StructuredTool:
    return StructuredTool.from_function(
        send, name="send", description="Send a message.", args_schema=schema
    )


class Plain(BaseModel):
    to: str
    cc: list[str] = Field(default_factory=list)


class Validated(BaseModel):
    to: str

    @field_validator("to")
    @classmethod
    def lower(cls, value: str) -> str:
        return value.lower()


class Annotated_(BaseModel):
    to: Annotated[str, AfterValidator(str.strip)]


class Factory(BaseModel):
    to: str
    stamp: str = Field(default_factory=lambda: "now")


class PostInit(BaseModel):
    to: str

    def model_post_init(self, context: Any) -> None:
        pass


class Nested(BaseModel):
    inner: Validated


class Computed(BaseModel):
    to: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def domain(self) -> str:
        return self.to.split("@")[-1]


class Serialized(BaseModel):
    to: Annotated[str, PlainSerializer(lambda v: v.upper())]


class WholeModel(BaseModel):
    to: str

    @model_validator(mode="after")
    def check(self) -> WholeModel:
        return self


class OwnDump(BaseModel):
    to: str

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        return {"to": "elsewhere"}


class Legacy(pydantic_v1.BaseModel):
    to: str


class Kind(enum.Enum):
    MAIL = "mail"


class WithEnum(BaseModel):
    to: str
    kind: Kind = Kind.MAIL


class MutableDefault(BaseModel):
    to: str
    cc: list[str] = ["audit@ok.test"]


class OwnNew(BaseModel):
    to: str

    def __new__(cls, *args: Any, **kwargs: Any) -> OwnNew:
        return super().__new__(cls)


class Recipient(NamedTuple):
    address: str


class WithNamedTuple(BaseModel):
    to: Recipient


def test_the_demo_tools_read_alike() -> None:
    tools, _ = customer_db_tools()
    assert [reads_alike(t) for t in tools] == [True] * len(tools)


class PlainNested(BaseModel):
    inner: Plain
    tags: tuple[str, ...] = ()
    limit: int = 10


def test_a_plain_schema_a_json_schema_and_no_schema_read_alike() -> None:
    assert reads_alike(with_schema(Plain))
    assert reads_alike(with_schema(PlainNested))
    json_schema = {"type": "object", "properties": {"to": {"type": "string"}}}
    assert reads_alike(with_schema(json_schema))
    assert reads_alike(Tool(name="post", func=lambda s: s, description="POST"))


@pytest.mark.parametrize(
    "schema",
    [
        Validated,
        Annotated_,
        Factory,
        PostInit,
        Nested,
        Computed,
        Serialized,
        WholeModel,
        OwnDump,
        Legacy,
        WithEnum,
        MutableDefault,
        OwnNew,
        WithNamedTuple,
    ],
)
def test_a_schema_that_runs_the_applications_code_is_read_again(schema: type) -> None:
    tool = with_schema(schema)
    assert not reads_alike(tool)
    args: dict[str, Any] = {"to": "Bob@Ok.Test"}
    if schema is Nested:
        args = {}
    elif schema is WithNamedTuple:
        args = {"to": ["Bob@Ok.Test"]}
    call = tool_call("send", args, "c1")
    view, problem = prepared_call(tool, call)
    decided = granted_view(tool, view, problem)
    assert not decided.startswith(ALIKE)


def test_a_tool_that_reads_its_input_its_own_way_is_not_alike() -> None:
    class OwnParse(StructuredTool):
        def _parse_input(self, tool_input: Any, tool_call_id: Any) -> Any:
            return tool_input

    tool = OwnParse.from_function(send, name="send", description="d", args_schema=Plain)
    assert not reads_alike(tool)


def test_a_call_decided_alike_runs_only_on_a_tool_that_reads_alike() -> None:
    """A call decided with a tool that reads alike, run by a tool of the same name that
    does not (another tools node than the guard's registry): it is read and refused."""
    alike, other = with_schema(Plain), with_schema(Validated)
    call = tool_call("send", {"to": "bob@ok.test"}, "c1")
    decided = granted_view(alike, *prepared_call(alike, call))
    assert decided.startswith(ALIKE)
    assert view_refusal(alike, call, decided) is None
    refusal = view_refusal(other, call, decided)
    assert refusal is not None and refusal.status == "error"


def test_view_digest_stays_a_digest_for_direct_checks() -> None:
    """The interceptor and guard_tools compare the view now with the view decided: the
    digest stays one, so a call that reads differently is caught there too."""
    tool = with_schema(Plain)
    decided = view_digest(tool, tool_call("send", {"to": "bob@ok.test"}, "c1"))
    assert decided and not decided.startswith(ALIKE)
    assert view_refusal(tool, tool_call("send", {"to": "eve@evil.test"}, "c1"), decided)


# -- the reading a grant carries -------------------------------------------------------------


class Amount(BaseModel):
    amount: int


class AmountText(BaseModel):
    amount: str


class Stripped(BaseModel):
    model_config = {"str_strip_whitespace": True}
    amount: str


def test_a_grant_carries_how_its_tool_reads() -> None:
    """Two tools that both read alike but read otherwise (another field type, another
    config): a call granted with one is read again, and refused, where the other runs it
    (another release of the tool resumed from a checkpoint)."""
    call = tool_call("send", {"amount": "5000"}, "c1")
    decided = granted_view(with_schema(AmountText), *prepared_call(with_schema(AmountText), call))
    assert decided.startswith(ALIKE)
    assert view_refusal(with_schema(AmountText), call, decided) is None  # the same reading
    for other in (Amount, Stripped):
        assert reads_alike(with_schema(other))
        assert reading_mark(with_schema(other)) != decided
        refusal = view_refusal(with_schema(other), call, decided)
        assert refusal is not None and refusal.status == "error"


MODULE = '''
from pydantic import BaseModel
from langchain_core.tools import StructuredTool

class Inner(BaseModel):
    to: str

class Outer(BaseModel):
    inner: Inner
    items: tuple[Inner, ...] = ()

def send(inner, items=()):
    """Send."""
    return "sent"

TOOL = StructuredTool.from_function(send, name="send", args_schema=Outer)
'''


def test_the_reading_is_the_same_in_another_process(tmp_path: Any) -> None:
    """A grant checkpointed by one process is checked by another running the same code:
    the mark leaves out what differs between processes (Pydantic's references carry the
    class's id)."""
    import subprocess
    import sys

    (tmp_path / "reading_tools.py").write_text(MODULE)
    script = "import reading_tools; from langchain_opa_guard.guards.tool_readings import "
    script += "reading_mark; print(reading_mark(reading_tools.TOOL))"
    marks = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
            env={**__import__("os").environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(marks) == 1 and next(iter(marks)).startswith(ALIKE), marks
