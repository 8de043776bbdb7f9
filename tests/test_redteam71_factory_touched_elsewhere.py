"""Red team 71: a default factory's value that validation changes from somewhere
``schema_views._validated`` does not look (another field's validator, ``model_post_init``)
is neither shown to the policy nor refused.

Red team 69's fix compares a factory field's value with a fresh one only "where a validator
could have touched it": a model or root validator, a validator that names the field, or
``validate_default``. Validation can change the factory's fresh dict in place from elsewhere:

1. Pydantic v2 ``model_post_init`` (not a decorator: ``__pydantic_decorators__`` lists none);
2. Pydantic v2: a ``field_validator`` of a LATER field that fills ``info.data["options"]``;
3. ``pydantic.v1``: a ``@validator`` of a later field that fills ``values["options"]``.

LangChain hands the tool every defaulted field as validated (``getattr(model, name)``), so
the tool runs with the value so made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic.v1 as pydantic_v1
import pytest
from mcp_server_kit import policy_engine
from pydantic import BaseModel, Field, ValidationInfo, field_validator
from surface_kit import MODES, SURFACES, run_turn
from test_redteam69_factory_defaults import POLICY, USER, purge_tool

from langchain_opa_guard import EmbeddedPolicy


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam69factory", POLICY)


class PostInitV2(BaseModel):
    table: str
    options: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        if self.table.startswith("tmp_"):
            self.options["mode"] = "live"


class LaterFieldV2(BaseModel):
    options: dict[str, Any] = Field(default_factory=dict)
    table: str

    @field_validator("table")
    @classmethod
    def _scratch_tables_live(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith("tmp_") and isinstance(info.data.get("options"), dict):
            info.data["options"]["mode"] = "live"
        return value


class LaterFieldV1(pydantic_v1.BaseModel):
    options: dict = pydantic_v1.Field(default_factory=dict)
    table: str

    @pydantic_v1.validator("table")
    def _scratch_tables_live(cls, value: str, values: dict[str, Any]) -> str:
        if value.startswith("tmp_") and isinstance(values.get("options"), dict):
            values["options"]["mode"] = "live"
        return value


SCHEMAS = {
    "v2-model_post_init": PostInitV2,
    "v2-later-field-validator": LaterFieldV2,
    "v1-later-field-validator": LaterFieldV1,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("schema", list(SCHEMAS))
def test_a_factory_default_changed_elsewhere_is_decided(
    engine: EmbeddedPolicy, schema: str, surface: str, mode: str
) -> None:
    """What was done: ``purge({"table": "tmp_users"})`` with a schema whose ``options``
    (``default_factory=dict``) is filled in place with ``mode: live`` by ``model_post_init``
    or by a later field's validator, on every wiring.

    Observed: ``_validated`` finds no validator that names ``options`` (nor a model
    validator, nor ``validate_default``), so the factory's value is taken for the schema's
    own; the policy is given ``{"table": "tmp_users"}`` and allows a dry run; the tool
    purges live (an explicit ``options={"mode": "live"}`` is denied: red team 69's control).

    Expected: the value the tool runs with is decided (denied), or the call is refused."""
    ran: list[str] = []
    answer, _ = run_turn(
        surface,
        engine,
        [purge_tool(SCHEMAS[schema], ran)],
        "purge",
        {"table": "tmp_users"},
        mode,
        context={"user": USER},
    )
    assert "live" not in ran, (
        "the policy allowed purge(table='tmp_users') as a dry run; the tool ran live with "
        f"options the schema made: {answer.content!r:.200}"
    )
