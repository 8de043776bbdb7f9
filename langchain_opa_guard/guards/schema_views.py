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

import collections
import dataclasses
import datetime
import decimal
import enum
import ipaddress
import pathlib
import uuid
from collections.abc import Mapping
from typing import Any

import pydantic.v1 as pydantic_v1
import pydantic_core
from pydantic import BaseModel, SecretBytes, SecretStr

from langchain_opa_guard.engines.engine import same_json

__all__ = ["UnshowableArguments", "schema_view"]

_SECRETS = (SecretStr, SecretBytes, pydantic_v1.SecretStr, pydantic_v1.SecretBytes)

# Values the policy input shows whole: JSON's own, and types whose JSON form (a number, an
# ISO date, the text the type itself is made of) carries all of them.
_LEAVES = (
    str,
    int,
    float,
    type(None),
    decimal.Decimal,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    enum.Enum,
    pathlib.PurePath,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
    pydantic_core.Url,
    pydantic_core.MultiHostUrl,
)


class UnshowableArguments(ValueError):
    """The arguments hold a value the policy input cannot show as the tool gets it."""


def schema_view(schema: type, given: Mapping[str, Any], hidden: frozenset[str]) -> dict[str, Any]:
    """The model's arguments ``given`` through ``schema`` (Pydantic v2 or v1), as the tool
    gets them: the fields the model set that LangChain hands the tool (not those in
    ``hidden``, injected by the runtime, nor those the schema excludes from its dump).

    Raises:
        pydantic.ValidationError: The arguments do not validate (v1's as well).
        UnshowableArguments: A value the policy input cannot show whole (an object of
            another kind, bytes that are not text, a schema with its own model serializer).
        TypeError: ``schema`` is not a Pydantic model class.
    """
    if issubclass(schema, BaseModel):
        if _hands_its_own_way(schema):
            raise UnshowableArguments(_OWN_WAY)
        return _fields(schema.model_validate(given), hidden)
    if issubclass(schema, pydantic_v1.BaseModel):
        if schema.dict is not pydantic_v1.BaseModel.dict:
            raise UnshowableArguments(_OWN_WAY)
        return _legacy_fields(schema.parse_obj(given), hidden)
    raise TypeError("not a Pydantic schema")


_OWN_WAY = (
    "the tool's schema makes the arguments it hands the tool its own way (its own dump, a "
    "model serializer, a computed field, a default made from the other arguments), so what "
    "the tool is handed cannot be checked"
)


def _hands_its_own_way(schema: type[BaseModel]) -> bool:
    """Whether LangChain may hand the tool keys or values other than the fields the model
    set: it hands the keys of ``model_dump()`` with ``getattr`` values, and the defaults."""
    return (
        schema.model_dump is not BaseModel.model_dump
        or bool(schema.__pydantic_decorators__.model_serializers)
        or bool(schema.model_computed_fields)
        or any(
            getattr(info, "default_factory_takes_validated_data", False)
            for info in schema.model_fields.values()
        )
    )


def _fields(model: BaseModel, hidden: frozenset[str] | None = None) -> dict[str, Any]:
    """The arguments' own fields: those the model set and LangChain hands the tool
    (``hidden``: but the injected ones), and those it left out whose value validation made
    from the others (a default other than the schema's); a nested model (``hidden``
    ``None``): all its fields, defaults and excluded ones included, as the tool gets it
    whole."""
    top = hidden is not None
    given = model.model_fields_set
    view = {
        _name(name, info): _value(getattr(model, name))
        for name, info in type(model).model_fields.items()
        if not top
        or (
            name not in (hidden or ())
            and not _dropped(model, name, info)
            and (name in given or _made_default(model, name, info))
        )
    }
    for key, value in (model.__pydantic_extra__ or {}).items():
        view.setdefault(key, _value(value))
    return view


def _made_default(model: BaseModel, name: str, info: Any) -> bool:
    """Whether a field the model left out holds other than the schema's own default (a
    validator run on the default, ``validate_default=True``, a model validator, another
    field's validator or ``model_post_init`` made or changed it from the other arguments):
    the tool gets that value, so the policy sees it. See :func:`_against_factory` for a
    default factory's value."""
    value = getattr(model, name)
    if info.default_factory is None:
        return not same_json(value, info.get_default(call_default_factory=False))
    return _against_factory(value, info.default_factory, _has_validators(type(model)))


def _against_factory(value: Any, factory: Any, validated: bool) -> bool:
    """Whether a default factory's ``value`` is not the factory's own: compared with a fresh
    one, where the factory gives the same value each time. A factory that gives a new value
    each time (a uuid, a time) cannot be told from a value validation made: in a schema
    whose validators could have changed it, it cannot be shown."""
    fresh = factory()
    if _shares(value, fresh, 0):
        # The factory hands out a shared object (or one inside what it makes): a validator
        # may have changed it in place, and the fresh one with it.
        if validated:
            raise UnshowableArguments(_NEW_EACH_TIME)
        return False
    if same_json(value, fresh):
        return False
    if same_json(factory(), fresh):
        return True
    if validated:
        raise UnshowableArguments(_NEW_EACH_TIME)
    return False


_IMMUTABLE = (str, bytes, int, float, bool, type(None), frozenset)


def _shares(value: Any, fresh: Any, depth: int) -> bool:
    """Whether ``value`` and ``fresh`` (two values of one factory) hold the very same mutable
    object anywhere (itself, or inside: a container's items, a model's fields)."""
    if isinstance(value, _IMMUTABLE) or depth > 32:
        return False
    if value is fresh:
        return True
    if isinstance(value, Mapping) and isinstance(fresh, Mapping):
        return any(k in fresh and _shares(v, fresh[k], depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)) and isinstance(fresh, (list, tuple)):
        return any(_shares(a, b, depth + 1) for a, b in zip(value, fresh, strict=False))
    if dataclasses.is_dataclass(value) and type(value) is type(fresh):
        return any(
            _shares(getattr(value, f.name), getattr(fresh, f.name), depth + 1)
            for f in dataclasses.fields(value)
        )
    if isinstance(value, BaseModel) and isinstance(fresh, BaseModel):
        return any(
            _shares(getattr(value, n), getattr(fresh, n, None), depth + 1)
            for n in type(value).model_fields
        )
    return False


_NEW_EACH_TIME = (
    "the tool's schema hands the tool a default that its validators may change and that "
    "cannot be compared with a fresh one (made anew each time, a uuid or a time, or one "
    "object shared by every call), so what the tool is handed cannot be checked"
)


def _has_validators(schema: type[BaseModel]) -> bool:
    """Whether code of the schema's may change a field's value after its default was made:
    any validator, or ``model_post_init``."""
    decorators = schema.__pydantic_decorators__
    validators = (
        decorators.model_validators
        or decorators.root_validators
        or decorators.field_validators
        or decorators.validators
    )
    return bool(validators) or schema.model_post_init is not BaseModel.model_post_init


def _dropped(model: BaseModel, name: str, info: Any) -> bool:
    """Whether LangChain leaves a field out of what it hands the tool: it hands the keys of
    ``model_dump()``, which leaves out an excluded field."""
    if info.exclude is True:
        return True
    exclude_if = getattr(info, "exclude_if", None)
    return callable(exclude_if) and bool(exclude_if(getattr(model, name)))


def _name(name: str, info: Any) -> str:
    """A field's name in the view: its alias where it has one (a validation-only or a
    serialization-only alias leaves the field's own name)."""
    return info.alias if isinstance(info.alias, str) else name


def _legacy_fields(
    model: pydantic_v1.BaseModel, hidden: frozenset[str] | None = None
) -> dict[str, Any]:
    top = hidden is not None
    given = model.__fields_set__
    # .dict(), whose keys LangChain hands the tool, leaves a whole excluded field out.
    excluded = {
        name for name, spec in (type(model).__exclude_fields__ or {}).items() if spec in (..., True)
    }
    view = {
        field.alias: _value(getattr(model, name))
        for name, field in model.__fields__.items()
        if not top
        or (
            name not in (hidden or ())
            and name not in excluded
            and (name in given or _legacy_made_default(model, name, field))
        )
    }
    for key, value in model.__dict__.items():  # extras (Extra.allow)
        if key not in model.__fields__:
            view.setdefault(key, _value(value))
    return view


def _legacy_made_default(model: pydantic_v1.BaseModel, name: str, field: Any) -> bool:
    """:func:`_made_default` of a ``pydantic.v1`` model (an ``always=True`` validator or a
    root validator made the value)."""
    kind = type(model)
    value = getattr(model, name)
    if field.default_factory is None:
        return not same_json(value, field.default)
    validated = (
        any(f.class_validators for f in kind.__fields__.values())
        or getattr(kind.__config__, "validate_all", False)
        or bool(kind.__pre_root_validators__ or kind.__post_root_validators__)
    )
    return _against_factory(value, field.default_factory, bool(validated))


def _value(value: Any) -> Any:
    """``value`` as the policy input can show it whole: models, dataclasses and containers
    opened, secrets by value; anything else the input could only show as its text is
    refused (:class:`UnshowableArguments`)."""
    if isinstance(value, _LEAVES):  # bool is an int
        return value
    if isinstance(value, BaseModel):
        return _fields(value)
    if isinstance(value, pydantic_v1.BaseModel):
        return _legacy_fields(value)
    if isinstance(value, _SECRETS):
        return _value(value.get_secret_value())
    if isinstance(value, Mapping):
        return {k: _value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, collections.deque)):
        return [_value(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_value(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise UnshowableArguments(
                "the arguments hold bytes that are not text, which the policy input cannot "
                "show as the tool gets them"
            ) from None
    raise UnshowableArguments(
        f"the arguments hold a {type(value).__name__}, which the policy input cannot show "
        "as the tool gets it"
    )
