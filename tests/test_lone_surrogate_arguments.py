"""A call whose arguments hold text with a lone surrogate is refused before the policy.

A model may write ``"\\ud800"`` in its JSON arguments; Python reads it as a string UTF-8
cannot hold. The policy input is UTF-8, so ``jsonable`` showed the policy ``"?"`` in its
place while the tool ran with the text itself: ``https://evil\\ud800.test`` read as another
address to the policy. Such a call is now refused with a reason naming the problem, never
the value, on every surface (guard node + ``GuardedToolNode``, the ``ToolCallGuard``
interceptor, the ``create_agent`` middleware, ``guard_tools``), sync and async, embedded
engine and OPA server, wherever the text sits in the arguments.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.tools import BaseTool, StructuredTool
from surface_kit import MODES, SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, OPAServer, PolicyEngine
from langchain_opa_guard.plain_json import BAD_TEXT, arguments_problem, jsonable

POLICY = "mediation/decision"
USER = {"id": "u-1", "role": "tester"}

# What json.loads gives for the JSON text "\ud800" (six ASCII characters from a model).
LONE = json.loads('"\\ud800"')


@pytest.fixture(params=["embedded", "opa"])
def engine(request: pytest.FixtureRequest) -> Any:
    if request.param == "embedded":
        yield EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
        return
    client = OPAServer(request.getfixturevalue("opa_url"), policy=POLICY)
    yield client
    client.close()


def fetch_tools(fetched: list[Any]) -> list[BaseTool]:
    def read(url: str, options: dict[str, Any] | None = None) -> str:
        """Read a page (the test policy allows any call of ``read``)."""
        fetched.append(url)
        return "page"

    return [StructuredTool.from_function(read)]


def assert_refused(answer: Any) -> None:
    assert answer.status == "error"
    content = str(answer.content)
    assert "lone surrogate" in content, content
    assert "evil" not in content and "\\ud800" not in content  # the problem, never the value
    assert answer.response_metadata["opa_guard"]["error"] == "invalid_call"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(
    "args",
    [
        {"url": f"https://evil{LONE}.test/"},
        {"url": "https://ok.test/", "options": {"headers": [{"x": f"a{LONE}"}]}},
    ],
    ids=["top-level", "nested"],
)
def test_text_with_a_lone_surrogate_is_refused_before_the_policy(
    engine: PolicyEngine, surface: str, mode: str, args: dict[str, Any]
) -> None:
    fetched: list[Any] = []
    answer, _ = run_turn(
        surface, engine, fetch_tools(fetched), "read", args, mode, context={"user": USER}
    )
    assert fetched == []
    assert_refused(answer)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_text_utf8_holds_still_runs(engine: PolicyEngine, surface: str, mode: str) -> None:
    fetched: list[Any] = []
    answer, _ = run_turn(
        surface,
        engine,
        fetch_tools(fetched),
        "read",
        {"url": "https://ok.test/é😀", "options": {"q": ["ü", 1, None, True]}},
        mode,
        context={"user": USER},
    )
    assert answer.status == "success", answer.content
    assert fetched == ["https://ok.test/é😀"]


def test_arguments_problem_reads_every_string() -> None:
    assert arguments_problem({"q": LONE}) == BAD_TEXT
    assert arguments_problem({"q": [1, {"r": ("a", LONE)}]}) == BAD_TEXT  # a tuple too
    assert arguments_problem({"q": {"r": {LONE + "x"}}}) == BAD_TEXT  # a set too
    assert arguments_problem({"q": "é", "r": ["ascii", "😀"]}) is None
    # Outside a call's arguments the policy input still writes "?" for it.
    assert jsonable({"q": LONE}) == {"q": "?"}
