"""Red team 6: schemas classified "reads alike" that still run the application's code.

Since the guard node and the middleware stopped reading a call a second time where it runs
when its tool "reads the same arguments alike every time" (``tool_readings.reads_alike``:
the decided view is the constant ``ALIKE``, and ``view_refusal`` then accepts the call
without reading it again), the only thing standing between a stateful validator and a
call the policy never decided is that classification. It looks for *functions* in the
Pydantic core schema and lets every *class* through (``callable(item) and not
isinstance(item, type)``). But Pydantic calls classes as code in several places, and a
class's ``__new__`` / ``__init__`` can read any state:

1. ``Annotated[str, AfterValidator(Resolve)]`` (or ``BeforeValidator``) where ``Resolve``
   is a ``str`` subclass whose ``__new__`` resolves a contact's name through the address
   book: a validator in all but name (the core schema holds
   ``{"type": "function-after", "function": {"function": Resolve}}``).
2. A field typed as a ``NamedTuple`` subclass with its own ``__new__``: Pydantic builds it
   with a ``call`` schema whose ``function`` is the class.
3. A nested model with ``Field(default_factory=CcList)``, a class: a nested model's defaults
   are part of the decided arguments (``model_dump`` of the nested model writes them), and
   the class reads the user's settings each time it is called.

The attack, as in red team 3's address-book case: the policy decides "mail bob" as
``bob@ok.test``; before the tool runs, a sibling call of the turn ("save contact bob as
eve@evil.test", here: the decision log that stands for it, deterministic) changes the
address book; the tool validates the model's arguments again and mails eve@evil.test.

Observed on main: ``reads_alike`` is ``True`` for all three schemas, the call is not read
again, and the mail goes to ``eve@evil.test`` (guard node with and without a checkpointer,
sync and async, both engines; the middleware too). With a field validator (a function)
the same attack is refused with "the arguments read differently when run than when
decided" (tests/test_validated_view_surfaces.py).

What should happen: a schema that calls any class other than the plain data types Pydantic
knows is not "alike" (or the call is read again where it runs), so the mail does not run
and is answered with the read-differently error; with the book unchanged it runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, NamedTuple

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from opa_process import OPAProcess
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    OPAServer,
    PolicyEngine,
    PolicyGuardNode,
)
from langchain_opa_guard.decision import Decision
from langchain_opa_guard.guards.tool_readings import reads_alike
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

# Every string anywhere in a mail's arguments must be an address at ok.test.
POLICY_TEXT = """package rt6alike

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
POLICY = "rt6alike/decision"
USER = {"id": "u-1", "role": "tester"}
READ_DIFFERENTLY = "the arguments read differently when run than when decided"


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("rt6-alike")
    (root / "alike.rego").write_text(POLICY_TEXT)
    return root


@pytest.fixture(scope="module")
def opa(policy_dir: Any) -> Iterator[OPAProcess]:
    with OPAProcess([policy_dir], log_path=policy_dir / "opa.log") as server:
        yield server


@pytest.fixture(params=["embedded", "opa"])
def engine(request: pytest.FixtureRequest, policy_dir: Any) -> Iterator[PolicyEngine]:
    if request.param == "embedded":
        yield EmbeddedPolicy(policy_dir, policy=POLICY)
        return
    client = OPAServer(request.getfixturevalue("opa").url, policy=POLICY)
    yield client
    client.close()


class Book:
    """The user's address book and settings (a service the schema's classes consult)."""

    def __init__(self) -> None:
        self.contacts = {"bob": "bob@ok.test"}
        self.cc: list[str] = []


class ChangedAfterDecision:
    """A decision log that changes the book as soon as the policy allowed the mail: it
    stands for a sibling call of the same turn ("save contact bob as eve@evil.test")."""

    def __init__(self, book: Book, enabled: bool) -> None:
        self.book = book
        self.enabled = enabled
        self.decided: list[str] = []

    def write(self, document: Mapping[str, Any], decision: Decision) -> None:
        tool = document.get("tool") or {}
        self.decided.append(str(tool.get("name")))
        if self.enabled and tool.get("name") == "send" and decision.allow:
            self.book.contacts["bob"] = "eve@evil.test"
            self.book.cc.append("eve@evil.test")


def mail_tool(kind: str, book: Book, sent: list[Any]) -> tuple[BaseTool, dict[str, Any]]:
    """A mail tool whose schema is of ``kind``, and the model's arguments for "mail bob"."""

    class Resolve(str):
        """A contact's name becomes its address (the class is the validator)."""

        def __new__(cls, value: str) -> Resolve:
            return str.__new__(cls, book.contacts.get(str(value).strip().lower(), value))

    class _Recipient(NamedTuple):
        to: str

    class Recipient(_Recipient):
        def __new__(cls, to: str) -> Recipient:
            return super().__new__(cls, book.contacts.get(to.strip().lower(), to))

    class CcList(list):  # type: ignore[type-arg]
        """The user's default copy list, read from the settings each time."""

        def __init__(self) -> None:
            super().__init__(book.cc)

    if kind == "after-validator class":

        class AfterArgs(BaseModel):
            to: Annotated[str, AfterValidator(Resolve)]

        schema: type[BaseModel] = AfterArgs
        args: dict[str, Any] = {"to": "bob"}
    elif kind == "before-validator class":

        class BeforeArgs(BaseModel):
            to: Annotated[str, BeforeValidator(Resolve)]

        schema, args = BeforeArgs, {"to": "bob"}
    elif kind == "namedtuple with __new__":

        class TupleArgs(BaseModel):
            rcpt: Recipient

        schema, args = TupleArgs, {"rcpt": ["bob"]}
    else:

        class Envelope(BaseModel):
            to: str
            cc: list[str] = Field(default_factory=CcList)

        class NestedArgs(BaseModel):
            envelope: Envelope

        schema, args = NestedArgs, {"envelope": {"to": "bob@ok.test"}}

    def send(**kwargs: Any) -> str:
        sent.append(kwargs)
        return "sent"

    tool = StructuredTool.from_function(
        send, name="send", description="Send a mail.", args_schema=schema
    )
    return tool, args


KINDS = [
    "after-validator class",
    "before-validator class",
    "namedtuple with __new__",
    "nested class default factory",
]


def addresses(value: Any) -> list[str]:
    """Every string the tool received, however nested (tuples, models, lists)."""
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
    surface: str,
    engine: PolicyEngine,
    tool: BaseTool,
    args: dict[str, Any],
    log: ChangedAfterDecision,
    *,
    asynchronous: bool = False,
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
    if asynchronous:
        result = asyncio.run(graph.ainvoke(state, config, context={"user": USER}))
    else:
        result = graph.invoke(state, config, context={"user": USER})
    return list(result["messages"])


def check(messages: list[Any], sent: list[Any], log: ChangedAfterDecision) -> None:
    assert "send" in log.decided  # the policy decided the mail, as addressed to bob@ok.test
    answer = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}["m1"]
    ran_with = [addresses(kwargs) for kwargs in sent]
    if not log.enabled:
        assert ran_with and all(a.endswith("@ok.test") for a in ran_with[0]), ran_with
        assert answer.status != "error"
        return
    assert ran_with == [], f"the mail ran with {ran_with}, the policy decided bob@ok.test"
    assert answer.status == "error"
    record = (answer.artifact or {}).get("opa_guard") or {}
    assert record.get("reasons") == [READ_DIFFERENTLY]


@pytest.mark.parametrize("changed", [False, True], ids=["book unchanged", "book changed"])
@pytest.mark.parametrize("surface", ["node", "node+checkpointer", "middleware"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_class_the_schema_calls_cannot_change_the_mail_after_the_decision(
    engine: PolicyEngine, kind: str, surface: str, changed: bool
) -> None:
    book, sent = Book(), []
    tool, args = mail_tool(kind, book, sent)
    log = ChangedAfterDecision(book, changed)
    check(run_turn(surface, engine, tool, args, log), sent, log)


@pytest.mark.parametrize("kind", KINDS)
def test_a_class_the_schema_calls_cannot_change_the_mail_async(kind: str, policy_dir: Any) -> None:
    book, sent = Book(), []
    tool, args = mail_tool(kind, book, sent)
    log = ChangedAfterDecision(book, True)
    engine = EmbeddedPolicy(policy_dir, policy=POLICY)
    check(run_turn("node", engine, tool, args, log, asynchronous=True), sent, log)


@pytest.mark.parametrize("kind", KINDS)
def test_a_schema_that_calls_a_class_of_the_applications_is_not_alike(kind: str) -> None:
    tool, _ = mail_tool(kind, Book(), [])
    assert not reads_alike(tool)
