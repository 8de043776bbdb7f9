"""Red team 71: a tool whose schema has a default factory that gives a new value each time
(a ticket number, a uuid, ``datetime.now``) and a model validator never runs, although the
policy allows it (a false refusal on every wiring).

Red team 69's fix compares a factory field's value with a fresh one where a validator could
have touched it, and shows it when they differ (README: "a factory that gives a new value
each time then reads as made"). The value shown is the guard's own validation's; when the
tool starts, the arguments are validated again, the factory gives another value, and the
check where the tool starts refuses the call ("its arguments read differently now than when
the policy decided them"). Re-planning cannot help: every proposal of the call ends so.

Known and documented (README, how arguments are read): such a default cannot be told from a
value validation made from the other arguments, so the call is refused before the policy is
asked (clearly, rather than by the check where the tool starts). Strict expected failures,
to be turned on the day the two can be told apart.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from langchain_core.tools import BaseTool, StructuredTool
from mcp_server_kit import policy_engine
from pydantic import BaseModel, Field, model_validator
from surface_kit import MODES, SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy

USER = {"id": "u-1", "role": "tester"}

POLICY = """package redteam71fresh

import rego.v1

default decision := {"allow": false, "reasons": ["unexpected ticket"]}

decision := {"allow": true, "reasons": []} if {
    input.tool.name == "file_ticket"
    not input.tool.args.ticket
}

decision := {"allow": true, "reasons": []} if {
    input.tool.name == "file_ticket"
    startswith(input.tool.args.ticket, "t-")
    to_number(substring(input.tool.args.ticket, 2, -1)) < 1000
}
"""

pytestmark = pytest.mark.xfail(
    strict=True, reason="a default made anew each time, in a schema with validators (README)"
)


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    return policy_engine(tmp_path, "redteam71fresh", POLICY)


def ticket_tool(seen: list[str], allowed: list[str]) -> BaseTool:
    numbers = itertools.count(1)

    def next_ticket() -> str:
        value = f"t-{next(numbers)}"
        allowed.append(value)
        return value

    class Args(BaseModel):
        title: str
        ticket: str = Field(default_factory=next_ticket)

        @model_validator(mode="after")
        def _title_stripped(self) -> Args:
            self.title = self.title.strip()
            return self

    def file_ticket(title: str, ticket: str = "") -> str:
        """File a ticket."""
        seen.append(ticket)
        return f"filed {ticket}: {title}"

    return StructuredTool.from_function(
        file_ticket, name="file_ticket", description="File a ticket.", args_schema=Args
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_an_allowed_call_with_a_fresh_factory_default_runs(
    engine: EmbeddedPolicy, surface: str, mode: str
) -> None:
    """What was done: ``file_ticket({"title": " x "})`` whose schema has
    ``ticket: str = Field(default_factory=next_ticket)`` (a counter: ``t-1``, ``t-2``, ...,
    as a uuid or a timestamp would be) and a ``model_validator`` that strips the title; the
    policy allows any ticket numbered under 1000 (or none), on every wiring.

    Observed: the policy is shown ``t-1`` and allows; the check where the tool starts
    validates again (``t-3``), finds other arguments and refuses: "did not run: its
    arguments read differently now than when the policy decided them ... Re-plan". A
    re-plan ends the same way: the tool can never run.

    Expected: an allowed call runs once, with the value the policy was shown (for example
    by handing the tool the value decided), not refused for a factory's fresh value."""
    seen: list[str] = []
    made: list[str] = []
    answer, _ = run_turn(
        surface,
        engine,
        [ticket_tool(seen, made)],
        "file_ticket",
        {"title": " x "},
        mode,
        context={"user": USER},
    )
    assert len(seen) == 1, (made, answer.content)
    assert answer.status != "error", answer.content
