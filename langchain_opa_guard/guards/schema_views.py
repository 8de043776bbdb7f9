"""A call's arguments as the tool's schema hands them to the tool: the validated values.

LangChain validates a call's arguments with the tool's schema and calls the tool with each
field's validated value (``getattr(model, name)``), never with the schema's serialized form.
So the view the policy decides on is built the same way: the fields the model set, under their
names (a field's alias where it has one; never a serialization-only alias), each with the
value the tool gets. A nested model is shown with all its
fields, defaults included (``Field(exclude=True)`` hides nothing from the policy), a serializer
changes nothing the policy sees, and a secret (``SecretStr``) is shown as the value the tool
runs with, not its mask.

Example:
    ```python
    class Payee(BaseModel):
        name: str
        account: str = Field(exclude=True)

    class PayArgs(BaseModel):
        payee: Payee
        amount: Decimal

    schema_view(PayArgs, {"payee": {"name": "L", "account": "DE01"}, "amount": "5"}, frozenset())
    # {"payee": {"name": "L", "account": "DE01"}, "amount": Decimal("5")}
    ```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic.v1 as pydantic_v1
from pydantic import BaseModel, SecretBytes, SecretStr

__all__ = ["schema_view"]

_SECRETS = (SecretStr, SecretBytes, pydantic_v1.SecretStr, pydantic_v1.SecretBytes)


def schema_view(schema: type, given: Mapping[str, Any], hidden: frozenset[str]) -> dict[str, Any]:
    """The model's arguments ``given`` through ``schema`` (Pydantic v2 or v1), as the tool
    gets them: the fields the model set, but those in ``hidden`` (injected by the runtime).

    Raises:
        pydantic.ValidationError: The arguments do not validate (v1's as well).
        TypeError: ``schema`` is not a Pydantic model class.
    """
    if issubclass(schema, BaseModel):
        return _fields(schema.model_validate(given), hidden)
    if issubclass(schema, pydantic_v1.BaseModel):
        return _legacy_fields(schema.parse_obj(given), hidden)
    raise TypeError("not a Pydantic schema")


def _fields(model: BaseModel, hidden: frozenset[str] | None = None) -> dict[str, Any]:
    """The arguments' own fields: those the model set (``hidden``: but the injected ones);
    a nested model (``hidden`` ``None``): all its fields, defaults included, as the tool
    gets it whole."""
    given = model.model_fields_set if hidden is not None else None
    view = {
        _name(name, info): _value(getattr(model, name))
        for name, info in type(model).model_fields.items()
        if given is None or (name in given and name not in (hidden or ()))
    }
    for key, value in (model.__pydantic_extra__ or {}).items():
        view.setdefault(key, _value(value))
    return view


def _name(name: str, info: Any) -> str:
    """A field's name in the view: its alias where it has one (a validation-only or a
    serialization-only alias leaves the field's own name)."""
    return info.alias if isinstance(info.alias, str) else name


def _legacy_fields(
    model: pydantic_v1.BaseModel, hidden: frozenset[str] | None = None
) -> dict[str, Any]:
    given = model.__fields_set__ if hidden is not None else None
    return {
        field.alias: _value(getattr(model, name))
        for name, field in model.__fields__.items()
        if given is None or (name in given and name not in (hidden or ()))
    }


def _value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _fields(value)
    if isinstance(value, pydantic_v1.BaseModel):
        return _legacy_fields(value)
    if isinstance(value, _SECRETS):
        return value.get_secret_value()
    if type(value) is dict:
        return {k: _value(v) for k, v in value.items()}
    if type(value) is list:
        return [_value(v) for v in value]
    if type(value) is tuple:
        return tuple(_value(v) for v in value)
    return value
