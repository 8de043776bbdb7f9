"""Red team 15: schemas that run the application's code but are classified "reads alike".

A tool whose schema "runs no code of the application's" (``tool_readings.reads_alike``) is
not read again where the call runs: its grant carries only a ``reading_mark``. Red team 6
showed that everything then rests on that classification. Two blind spots remain:

1. ``_calls_no_code`` and ``_plain_reading`` skip every dict key named ``"metadata"`` in the
   core schema (meant for Pydantic's JSON-schema metadata). But a model's fields live in a
   dict keyed by *field name* (``{"type": "model-fields", "fields": {"metadata": {...}}}``),
   so a field called ``metadata`` is never walked: its validator (here it resolves a
   contact's name through the address book) is invisible, the schema is "alike", and the
   call is not read again.
2. ``_plain_model`` accepts a model class without its own ``__new__`` or
   ``model_post_init``, but LangChain hands the tool ``getattr(result, name)`` for each field
   (and the guard decides the same ``getattr``): a model with its own ``__getattribute__``
   runs the application's code on every read.

The attack is red team 6's: the policy decides "mail bob" as ``bob@ok.test``; right after the
decision a sibling call of the turn (the decision log stands for it, deterministic) saves
bob as ``eve@evil.test``; the tool reads the model's arguments again and mails eve.

Observed on this branch's base: ``reads_alike`` is ``True`` for both schemas and the mail
goes to ``eve@evil.test`` on the guard node (with and without a checkpointer) and the
middleware. Expected: the call is read again where it runs and refused ("the arguments read
differently when run than when decided"); with the book unchanged the mail runs.

Smallest fix: skip ``metadata`` only where it is a core schema's own key (a dict that has a
``"type"`` key naming a schema, not a ``fields``/``properties`` mapping of names), and let
``_plain_model`` require ``__getattribute__``/``__getattr__`` to be ``BaseModel``'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from pydantic import AfterValidator, BaseModel

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyEngine,
    PolicyGuardNode,
)
from langchain_opa_guard.decision import Decision
from langchain_opa_guard.guards.tool_readings import reads_alike
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

# Every string anywhere in a mail's arguments must be an address at ok.test.
POLICY_TEXT = """package rt15alike

default decision := {"allow": false, "reasons": [{"code": "outside", "message": "outside ok.test"}]}

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "send"
	count(outside) == 0
}

outside contains v if {
	walk(input.tool.args, [_, v])
	is_string(v)
	not endswith(v, "@ok.test")
}
"""
POLICY = "rt15alike/decision"
USER = {"id": "u-1", "role": "tester"}
READ_DIFFERENTLY = "the arguments read differently when run than when decided"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    root = tmp_path_factory.mktemp("rt15-alike")
    (root / "alike.rego").write_text(POLICY_TEXT)
    return EmbeddedPolicy(root, policy=POLICY)


class Book:
    def __init__(self) -> None:
        self.contacts = {"bob": "bob@ok.test"}

    def resolve(self, value: str) -> str:
        return self.contacts.get(str(value).strip().lower(), value)


class ChangedAfterDecision:
    """A decision log that saves bob as eve@evil.test once the mail is allowed (it stands
    for a sibling call of the same turn, "save contact bob as eve@evil.test")."""

    def __init__(self, book: Book, enabled: bool) -> None:
        self.book = book
        self.enabled = enabled
        self.decided: list[str] = []

    def write(self, document: Mapping[str, Any], decision: Decision) -> None:
        tool = document.get("tool") or {}
        self.decided.append(str(tool.get("name")))
        if self.enabled and tool.get("name") == "send" and decision.allow:
            self.book.contacts["bob"] = "eve@evil.test"


def mail_tool(kind: str, book: Book, sent: list[Any]) -> tuple[BaseTool, dict[str, Any]]:
    if kind == "field named metadata":

        class MetadataArgs(BaseModel):
            # the mail's header block; "to" inside it is resolved through the address book
            metadata: Annotated[str, AfterValidator(book.resolve)]

        schema: type[BaseModel] = MetadataArgs
        args: dict[str, Any] = {"metadata": "bob"}
    elif kind == "nested field named metadata":

        class Envelope(BaseModel):
            metadata: Annotated[str, AfterValidator(book.resolve)]

        class NestedArgs(BaseModel):
            envelope: Envelope

        schema, args = NestedArgs, {"envelope": {"metadata": "bob"}}
    else:

        class ResolvingArgs(BaseModel):
            to: str

            def __getattribute__(self, name: str) -> Any:
                value = super().__getattribute__(name)
                return book.resolve(value) if name == "to" else value

        schema, args = ResolvingArgs, {"to": "bob"}

    def send(**kwargs: Any) -> str:
        sent.append(kwargs)
        return "sent"

    tool = StructuredTool.from_function(
        send, name="send", description="Send a mail.", args_schema=schema
    )
    return tool, args


KINDS = ["field named metadata", "nested field named metadata", "own __getattribute__"]


def addresses(value: Any) -> list[str]:
    if isinstance(value, str):
        return [str(value)]
    if isinstance(value, BaseModel):
        return addresses(value.model_dump())
    if isinstance(value, Mapping):
        return [a for v in value.values() for a in addresses(v)]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in addresses(v)]
    return []


def run_turn(
    surface: str, engine: PolicyEngine, tool: BaseTool, args: dict[str, Any], log: Any
) -> list[Any]:
    turn = AIMessage("", tool_calls=[tool_call("send", args, "m1")], id="turn-1")
    if surface == "middleware":
        model = ScriptedChatModel(script=[turn, "done"])
        graph: Any = create_agent(
            model,
            [tool],
            middleware=[OPAGuardMiddleware(engine, registry=[tool], decision_log=log)],
            checkpointer=InMemorySaver(),
        )
    else:
        script = iter([turn])
        node = GuardedToolNode([tool])
        builder = StateGraph(MessagesState)
        builder.add_node("agent", lambda s: {"messages": [next(script, AIMessage("done"))]})
        builder.add_node("guard", PolicyGuardNode(engine, registry=node, decision_log=log))
        builder.add_node("tools", node)
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        builder.add_edge("tools", "agent")
        graph = builder.compile(
            checkpointer=InMemorySaver() if surface == "node+checkpointer" else None
        )
    state = {"messages": [("user", "mail the summary to bob")]}
    config = {"configurable": {"thread_id": uuid.uuid4().hex, "user": USER}}
    result = graph.invoke(state, config, context={"user": USER})
    return list(result["messages"])


@pytest.mark.parametrize("changed", [False, True], ids=["book unchanged", "book changed"])
@pytest.mark.parametrize("surface", ["node", "node+checkpointer", "middleware"])
@pytest.mark.parametrize("kind", KINDS)
def test_code_the_alike_check_does_not_see_cannot_change_the_mail(
    engine: PolicyEngine, kind: str, surface: str, changed: bool
) -> None:
    book = Book()
    sent: list[Any] = []
    tool, args = mail_tool(kind, book, sent)
    log = ChangedAfterDecision(book, changed)
    messages = run_turn(surface, engine, tool, args, log)
    assert "send" in log.decided  # the policy decided the mail, as addressed to bob@ok.test
    answer = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}["m1"]
    ran_with = [addresses(kwargs) for kwargs in sent]
    if not changed:
        assert ran_with == [["bob@ok.test"]], ran_with
        assert answer.status != "error"
        return
    assert ran_with == [], f"the mail ran with {ran_with}; the policy decided bob@ok.test"
    assert answer.status == "error"
    record = (answer.artifact or {}).get("opa_guard") or {}
    assert record.get("reasons") == [READ_DIFFERENTLY]


@pytest.mark.parametrize("kind", KINDS)
def test_a_schema_that_runs_the_applications_code_is_not_alike(kind: str) -> None:
    tool, _ = mail_tool(kind, Book(), [])
    assert not reads_alike(tool)
