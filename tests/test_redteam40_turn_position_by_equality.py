"""Red team 40: a batched turn decides a call on the turn entry it is merely ``==`` to.

``EmbeddedPolicy.decide_many`` sends a turn's calls as their positions in ``input.turn``
(``_turn_positions``: by object identity, else by equality) and the generated module
decides ``input.turn[i]``, not the call itself. The equality fallback uses Python's ``==``,
which holds between ``True`` and ``1`` (and ``False`` and ``0``) although JSON, and Rego,
tell them apart. A call is then decided on another entry's arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opa_process import opa_binary

from langchain_opa_guard import EmbeddedPolicy

# Allowed unless the call is forced: ``force == true`` in Rego is false for the number 1.
POLICY = """package agent.authz

default decision := {"allow": false, "reasons": ["forced wipes are refused"]}

decision := {"allow": true, "reasons": []} if input.tool.args.force != true
"""


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedPolicy:
    root = tmp_path / "p"
    root.mkdir()
    (root / "policy.rego").write_text(POLICY)
    engine = EmbeddedPolicy(root, opa=opa_binary(), cache_dir=tmp_path / "cache")
    assert engine._state.turn_batch is not None  # the positional batch is in use
    return engine


def _wipe(call_id: str, force: Any) -> dict[str, Any]:
    return {"name": "wipe", "args": {"force": force}, "call_id": call_id}


def _docs(turn: list[dict[str, Any]], calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"version": 1, "user": {"id": "u"}, "context": {}, "turn": turn, "history": [], "tool": c}
        for c in calls
    ]


def test_a_forced_call_is_not_decided_on_a_turn_entry_holding_the_number_1(
    engine: EmbeddedPolicy,
) -> None:
    """Attack: decide_many over documents whose ``tool`` is ``{"force": True}`` while the
    turn entry of the same call id (equal under Python ``==``, not the same object) holds
    ``{"force": 1}``.

    Observed: decided alone, the forced call is denied; in decide_many it is allowed, because
    ``_turn_positions`` matched it by ``==`` to the ``force: 1`` entry and the module
    decided ``input.turn[i]`` (arguments that are not the call's own).

    Expected: each call decided on its own arguments, as ``decide`` decides it (the
    documents' shared parts are compared strictly as JSON by ``shared_part``; the call's
    match in the turn must be as strict, or the call must be sent itself).
    """
    turn = [_wipe("a", 1), _wipe("b", 0)]
    calls = [_wipe("a", True), _wipe("b", 0)]
    docs = _docs(turn, calls)
    alone = [engine.decide(doc).allow for doc in docs]
    assert alone == [False, True]
    assert [d.allow for d in engine.decide_many(docs)] == alone


async def test_the_async_batch_does_not_decide_a_forced_call_on_an_equal_entry(
    engine: EmbeddedPolicy,
) -> None:
    """Attack: as above, through ``adecide_many``, with the turn holding both forms of call
    ``a`` (``force: 1`` first, ``force: True`` second) and the call a copy of the second.

    Observed: the copy is matched to the first entry (``==``), and allowed.

    Expected: denied, as ``adecide`` denies it.
    """
    turn = [_wipe("a", 1), _wipe("a", True), _wipe("b", 0)]
    calls = [_wipe("a", True), _wipe("b", 0)]
    docs = _docs(turn, calls)
    alone = [(await engine.adecide(doc)).allow for doc in docs]
    assert alone == [False, True]
    assert [d.allow for d in await engine.adecide_many(docs)] == alone
