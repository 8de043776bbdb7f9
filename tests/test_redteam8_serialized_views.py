"""Red team 8: the policy decides the schema's *serialized* view, the tool runs with its values.

``prepared_call`` reads the model's arguments through the tool's schema and gives the policy
``model.model_dump(by_alias=True, include=...)``. LangChain hands the tool
``getattr(model, field)`` for each field: the validated values, never their serialized form.
Everything a Pydantic schema does on the way *out* therefore shows the policy something
else than the tool gets:

- a nested model's field marked ``Field(exclude=True)`` (a common way to keep an account
  number or a secret out of logs) is missing from the policy input, while the tool gets the
  nested model, that field included: the policy never sees the account it pays to;
- a ``PlainSerializer`` / ``field_serializer`` (money written as ``"1000.00"``) gives the
  policy the serializer's output: ``"1000.004"`` is decided as ``"1000.00"``;
- a ``serialization_alias`` (or an ``alias_generator`` for serialization, camelCase APIs)
  renames the key the policy reads: a rule on ``input.tool.args.to`` never matches, though
  the model and the README call the argument ``to``;
- a ``SecretStr`` field (a webhook URL with its token) is shown to the policy as
  ``"**********"`` (``plain_json._plain`` falls back to ``str()``): no rule on it can match;
- a ``Decimal`` that is not integral is given to the policy as a ``float``
  (``plain_json._plain``): ``Decimal("100.00000000000000001")`` is decided as ``100.0``,
  so a limit ``amount > 100`` lets it run, and two different amounts share one digest.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, PlainSerializer, SecretStr
from pydantic.alias_generators import to_camel
from surface_kit import SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine
from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.plain_json import value_digest

POLICY = """package redteam8

import rego.v1

deny contains "the payee account is blocked" if {
	input.tool.name == "pay"
	input.tool.args.payee.account == "ATTACKER-IBAN"
}

deny contains "transfers above 1000 need a human" if {
	input.tool.name == "transfer"
	to_number(input.tool.args.amount) > 1000
}

deny contains "no mail to evil.example" if {
	input.tool.name in {"send_mail", "send_mail_camel"}
	endswith(input.tool.args.to_address, "@evil.example")
}

deny contains "refunds above 100 need a human" if {
	input.tool.name == "refund"
	input.tool.args.amount > 100
}

deny contains "no webhooks to evil.example" if {
	input.tool.name == "set_webhook"
	contains(input.tool.args.url, "evil.example")
}

decision := {"allow": count(deny) == 0, "reasons": [{"code": "rt8", "message": m} | some m in deny]}
"""

USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    folder: Path = tmp_path_factory.mktemp("redteam8")
    (folder / "redteam8.rego").write_text(POLICY)
    return EmbeddedPolicy(folder, policy="redteam8/decision")


# -- the tools: each schema is an ordinary one a tool author might write -----------------


class Payee(BaseModel):
    name: str
    account: str = Field(exclude=True, description="IBAN; kept out of logs and dumps")


class PayArgs(BaseModel):
    payee: Payee
    amount: int


Money = Annotated[Decimal, PlainSerializer(lambda v: f"{v:.2f}", return_type=str)]


class TransferArgs(BaseModel):
    amount: Money


class MailArgs(BaseModel):
    to_address: str = Field(serialization_alias="recipient")
    body: str


class CamelMailArgs(BaseModel):
    model_config = ConfigDict(alias_generator=AliasGenerator(serialization_alias=to_camel))
    to_address: str
    body: str


class RefundArgs(BaseModel):
    amount: Decimal


class WebhookArgs(BaseModel):
    url: SecretStr  # a webhook URL carries its token: kept out of reprs and logs


def money_tools(done: list[Any]) -> list[BaseTool]:
    def pay(payee: Payee, amount: int) -> str:
        """Pay a payee."""
        done.append(("pay", payee.account, amount))
        return "paid"

    def transfer(amount: Decimal) -> str:
        """Transfer money."""
        done.append(("transfer", amount))
        return "sent"

    def send_mail(to_address: str, body: str) -> str:
        """Send an e-mail."""
        done.append(("send_mail", to_address))
        return "sent"

    def send_mail_camel(to_address: str, body: str) -> str:
        """Send an e-mail."""
        done.append(("send_mail_camel", to_address))
        return "sent"

    def refund(amount: Decimal) -> str:
        """Refund an order."""
        done.append(("refund", amount))
        return "refunded"

    def set_webhook(url: SecretStr) -> str:
        """Send events to a webhook."""
        done.append(("set_webhook", url.get_secret_value()))
        return "set"

    return [
        StructuredTool.from_function(set_webhook, args_schema=WebhookArgs),
        StructuredTool.from_function(pay, args_schema=PayArgs),
        StructuredTool.from_function(transfer, args_schema=TransferArgs),
        StructuredTool.from_function(send_mail, args_schema=MailArgs),
        StructuredTool.from_function(send_mail_camel, args_schema=CamelMailArgs),
        StructuredTool.from_function(refund, args_schema=RefundArgs),
    ]


CASES: list[tuple[str, dict[str, Any]]] = [
    ("pay", {"payee": {"name": "Landlord", "account": "ATTACKER-IBAN"}, "amount": 10}),
    ("transfer", {"amount": "1000.004"}),
    ("send_mail", {"to_address": "boss@evil.example", "body": "the files"}),
    ("send_mail_camel", {"to_address": "boss@evil.example", "body": "the files"}),
    ("refund", {"amount": "100.00000000000000001"}),
    ("set_webhook", {"url": "https://evil.example/hook?token=t"}),
]
IDS = [
    "nested-exclude",
    "plain-serializer",
    "serialization-alias",
    "alias-generator",
    "decimal",
    "secret-str",
]


class PlainPayee(BaseModel):
    name: str
    account: str


def test_the_policy_denies_the_values_it_can_see(engine: PolicyEngine) -> None:
    """The rules work when the policy is shown the values: the same calls on schemas
    without the serialization settings are denied."""

    def pay(payee: PlainPayee, amount: int) -> str:
        """Pay a payee."""
        done.append(("pay", payee.account))
        return "paid"

    def transfer(amount: Decimal) -> str:
        """Transfer money."""
        done.append(("transfer", amount))
        return "sent"

    def send_mail(to_address: str, body: str) -> str:
        """Send an e-mail."""
        done.append(("send_mail", to_address))
        return "sent"

    def refund(amount: int) -> str:
        """Refund an order."""
        done.append(("refund", amount))
        return "refunded"

    def set_webhook(url: str) -> str:
        """Send events to a webhook."""
        done.append(("set_webhook", url))
        return "set"

    controls: list[tuple[Callable[..., str], dict[str, Any]]] = [
        (pay, CASES[0][1]),
        (transfer, {"amount": "1000.01"}),
        (send_mail, CASES[2][1]),
        (refund, {"amount": 101}),
        (set_webhook, CASES[5][1]),
    ]
    for fn, args in controls:
        done: list[Any] = []
        tools = [StructuredTool.from_function(fn)]
        answer, _ = run_turn(
            "node", engine, tools, fn.__name__, args, "invoke", context={"user": USER}
        )
        assert done == [] and answer.status == "error", (fn.__name__, answer.content)


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(("name", "args"), CASES, ids=IDS)
def test_the_policy_decides_the_values_the_tool_runs_with(
    engine: PolicyEngine, surface: str, name: str, args: dict[str, Any]
) -> None:
    done: list[Any] = []
    answer, _ = run_turn(
        surface, engine, money_tools(done), name, args, "invoke", context={"user": USER}
    )
    assert done == [], f"the policy denies {name}({args}), yet the tool ran with {done}"
    assert answer.status == "error"


@pytest.mark.parametrize(("name", "args"), CASES[:4], ids=IDS[:4])
def test_prepared_call_shows_the_policy_what_the_tool_gets(name: str, args: dict[str, Any]) -> None:
    """The view handed to the policy holds every value the tool gets, under the field's
    name, with the value the tool gets (a nested model whole, defaults included)."""
    tool = next(t for t in money_tools([]) if t.name == name)
    call, problem = prepared_call(
        tool, {"name": name, "args": dict(args), "id": "c1", "type": "tool_call"}
    )
    if problem is not None:  # refused before the policy: fine
        return
    schema = tool.args_schema
    assert isinstance(schema, type) and issubclass(schema, BaseModel)
    ran = schema.model_validate(args)
    assert set(call["args"]) == set(args), call["args"]
    for key, value in call["args"].items():
        given = getattr(ran, key)
        if isinstance(given, BaseModel):
            assert value == {k: getattr(given, k) for k in type(given).model_fields}, (key, value)
        else:
            assert value == given and type(value) is type(given), (key, value, given)


def test_two_amounts_have_two_digests() -> None:
    """A grant's digest covers the value the tool runs with: two different amounts never
    share one (both are read as the float 100.0)."""
    assert value_digest({"amount": Decimal("100.00000000000000001")}) != value_digest(
        {"amount": Decimal("100.00000000000000002")}
    )
