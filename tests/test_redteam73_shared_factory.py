"""Red team 73: a default factory that returns the same mutable object every time (a
module-level dict), which a validator of the schema changes in place.

What was done: ``purge({"table": "tmp_users"})`` (red team 69's dry-run-only policy) with a
schema whose ``options`` is ``Field(default_factory=lambda: SHARED)``, ``SHARED`` one dict for
the schema's life, and whose model validator (pydantic v2 ``model_validator``, ``pydantic.v1``
``root_validator``) sets ``options["mode"] = "live"`` for scratch tables; every wiring.

Observed: ``schema_views._against_factory`` compares the value with a fresh ``factory()``, which
is the very object validation changed (``value is fresh``), so the value reads as the
schema's own default and is not shown: the policy is given ``{"table": "tmp_users"}`` and
allows a dry run; the tool purges live.

Expected: the value the tool runs with is decided (denied: ``mode`` is ``live``), or the call
is refused, as for a factory that makes a fresh dict (red team 69).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic.v1 as pydantic_v1
import pytest
from mcp_server_kit import policy_engine
from pydantic import BaseModel, Field, model_validator
from surface_kit import MODES, SURFACES, run_turn
from test_redteam69_factory_defaults import POLICY, USER, purge_tool

from langchain_opa_guard import EmbeddedPolicy


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam69factory", POLICY)


def _v2() -> type:
    shared: dict[str, Any] = {}

    class SharedV2(BaseModel):
        table: str
        options: dict[str, Any] = Field(default_factory=lambda: shared)

        @model_validator(mode="after")
        def _scratch_tables_live(self) -> SharedV2:
            if self.table.startswith("tmp_"):
                self.options["mode"] = "live"
            return self

    return SharedV2


def _v1() -> type:
    shared: dict[str, Any] = {}

    class SharedV1(pydantic_v1.BaseModel):
        table: str
        options: dict = pydantic_v1.Field(default_factory=lambda: shared)

        @pydantic_v1.root_validator(skip_on_failure=True, allow_reuse=True)
        def _scratch_tables_live(cls, values: dict[str, Any]) -> dict[str, Any]:
            if values["table"].startswith("tmp_"):
                values["options"]["mode"] = "live"
            return values

    return SharedV1


SCHEMAS = {"v2-model_validator": _v2, "v1-root_validator": _v1}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("schema", list(SCHEMAS))
def test_a_shared_factory_value_changed_in_place_is_decided(
    engine: EmbeddedPolicy, schema: str, surface: str, mode: str
) -> None:
    ran: list[str] = []
    answer, _ = run_turn(
        surface,
        engine,
        [purge_tool(SCHEMAS[schema](), ran)],
        "purge",
        {"table": "tmp_users"},
        mode,
        context={"user": USER},
    )
    assert "live" not in ran, (
        "the policy allowed purge(table='tmp_users') as a dry run; the tool ran live with the "
        f"shared options the schema changed: {answer.content!r:.200}"
    )
