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

from typing import Annotated, Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import AfterValidator, BaseModel
from test_redteam6_alike_schemas import (
    POLICY,
    POLICY_TEXT,
    READ_DIFFERENTLY,
    ChangedAfterDecision,
    addresses,
    run_turn,
)
from test_redteam6_alike_schemas import Book as AddressBook

from langchain_opa_guard import (
    EmbeddedPolicy,
    PolicyEngine,
)
from langchain_opa_guard.guards.tool_readings import reads_alike


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    root = tmp_path_factory.mktemp("rt15-alike")
    (root / "alike.rego").write_text(POLICY_TEXT)
    return EmbeddedPolicy(root, policy=POLICY)


class Book(AddressBook):
    def resolve(self, value: str) -> str:
        return self.contacts.get(str(value).strip().lower(), value)


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
