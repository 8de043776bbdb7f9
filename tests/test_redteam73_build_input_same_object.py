"""Red team 73: ``build_input`` returning the same object for every call of a turn.

What was done: red team 72's scene (``PolicyGuardNode`` with ``build_input=``, node and edge, a
policy that allows ``send`` only when ``input.context.recipient_verified``), one turn with an
unverified and a verified ``send``, with a ``build_input`` that returns one dict of its own
for every call (cleared and refilled from the call's document each time, then extended).

Observed (pinned): the guard decides each call on the document as it was when that call's
``build_input`` returned (``dict(...)`` of it, over the call's own copy of the default
document): the unverified send is denied in either order, the verified one sent.

Expected: the same.
"""

from __future__ import annotations

from typing import Any

import pytest
import test_redteam72_build_input_shared as rt72
from langchain_core.messages import AIMessage, ToolMessage
from test_redteam72_build_input_shared import (  # noqa: F401 - engine: the fixture
    BOB,
    EVE,
    VERIFIED,
    _graph,
    engine,
)

SHARED: dict[str, Any] = {}
USED: list[str] = []


def enrich_into_one_dict(document: dict[str, Any], call: Any, state: Any) -> dict[str, Any]:
    USED.append(call["id"])
    SHARED.clear()
    SHARED.update(document)
    SHARED["context"]["recipient_verified"] = call["args"].get("to") in VERIFIED
    return SHARED


@pytest.mark.parametrize("wiring", ["node", "edge"])
@pytest.mark.parametrize("order", ["unverified_first", "unverified_last"])
def test_one_returned_dict_for_every_call_decides_each_on_its_own(
    engine: Any,  # noqa: F811 - the fixture imported above
    wiring: str,
    order: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rt72, "enrich", enrich_into_one_dict)
    USED.clear()
    calls = [EVE, BOB] if order == "unverified_first" else [BOB, EVE]
    sent: list[str] = []
    graph = _graph(engine, AIMessage("", tool_calls=calls, id="t1"), sent, wiring)
    out = graph.invoke({"messages": [("user", "mail bob")]}, context={"user": {"id": "u"}})
    answers = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert set(USED) == {"s-bob", "s-eve"}  # this build_input decided them
    assert sent == ["bob@ok.test"]
    assert answers["s-eve"].status == "error"
